"""Definitions loading: the packaged default is valid, bad files are refused naming the key."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.core.definitions import DEFAULT_PATH, definitions_from_mapping
from streams.core.errors import DefinitionsError
from streams.definitions_file import PUBLIC_HOLIDAYS, load_definitions

RAW: dict[str, Any] = yaml.safe_load(DEFAULT_PATH.read_text())


def test_packaged_default_loads_with_a_stable_version() -> None:
    defs = load_definitions()
    assert len(defs.teams) >= 2
    assert {t.calendar.tz_name for t in defs.teams.values()} >= {
        "Europe/Berlin",
        "America/New_York",
    }
    assert defs.version == load_definitions().version
    assert len(defs.version) == 12


def test_any_change_changes_the_version() -> None:
    data = copy.deepcopy(RAW)
    data["scoring"]["mql_threshold"] = 51
    assert (
        definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS).version
        != load_definitions().version
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("scoring", "mql_threshold"), 0, "scoring.mql_threshold: must be >= 1"),
        (("teams", 0, "timezone"), "Mars/Olympus", "teams[0].timezone: unknown time zone"),
        (("teams", 0, "holidays", "add", 0), "someday", "teams[0].holidays.add[0]"),
        (("teams", 0, "holidays", "add", 0), "13-01", "teams[0].holidays.add[0]"),
        (("teams", 0, "holidays", "country"), "XX", "teams[0].holidays.country: unknown country"),
        (
            ("teams", 1, "holidays", "subdivision"),
            "ZZ",
            "teams[1].holidays.subdivision: US has no subdivision 'ZZ'",
        ),
        (
            ("teams", 0, "holidays", "categories"),
            ["pagan"],
            "teams[0].holidays.categories: DE has no category 'pagan'",
        ),
        (
            ("teams", 1, "holidays", "skip", 0),
            "Lincolns Birthday",
            "teams[1].holidays.skip[0]: US-NY has no holiday named 'Lincolns Birthday' (a typo",
        ),
        (("teams", 0, "holidays", "colour"), "red", "teams[0].holidays.colour: unknown key"),
        (
            ("lifecycle", "recycle_cooldown_days"),
            -1,
            "lifecycle.recycle_cooldown_days: must be >= 0",
        ),
        (("sla", "policies", 1, "business_hours"), -2, "sla.policies[1].business_hours"),
        (
            ("lifecycle", "dedupe_ids_per_lead"),
            0,
            "lifecycle.dedupe_ids_per_lead: must be >= 1",
        ),
        (("sla", "policies", 0, "starts_at"), "lunch", "sla.policies[0].starts_at: unknown stage"),
        (("attribution", "models"), ["magic"], "attribution.models[0]: unknown model"),
        (("scoring", "colour"), "red", "scoring.colour: unknown key"),
        (("people", 5, "manager_id"), "nobody", "manager_id: unknown person"),
    ],
)
def test_bad_definitions_name_the_key(path: tuple[Any, ...], value: Any, message: str) -> None:
    data = copy.deepcopy(RAW)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(DefinitionsError) as err:
        definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)
    assert message in str(err.value)


def test_public_holidays_need_a_source_outside_the_pure_core() -> None:
    with pytest.raises(
        DefinitionsError, match="teams\\[0\\].holidays.country: public holidays need"
    ):
        definitions_from_mapping(copy.deepcopy(RAW))


def test_an_explicit_date_list_stays_possible() -> None:
    data = copy.deepcopy(RAW)
    for team in data["teams"]:
        team["holidays"] = ["2026-03-09", "2026-12-24"]
    defs = definitions_from_mapping(data)  # no holiday source needed
    berlin = defs.teams["emea"].calendar
    assert date(2026, 3, 9) in berlin.holidays
    assert date(2026, 3, 8) not in berlin.holidays  # the library is not asked
    assert berlin.holidays.in_year(2026) == {date(2026, 3, 9), date(2026, 12, 24)}


def test_company_days_are_added_and_removed_once_or_every_year() -> None:
    data = copy.deepcopy(RAW)
    data["teams"][0]["holidays"] = {
        "country": "DE",
        "subdivision": "BE",
        "add": ["12-24", "2027-06-01"],
        "remove": ["2026-03-08", "10-03"],
    }
    berlin = definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS).teams["emea"].calendar
    closed = berlin.holidays
    assert date(2031, 12, 24) in closed and date(2026, 12, 24) in closed
    assert date(2027, 6, 1) in closed and date(2028, 6, 1) not in closed
    assert date(2026, 3, 8) not in closed and date(2027, 3, 8) in closed  # removed once
    assert all(date(year, 10, 3) not in closed for year in range(2025, 2035))  # every year


@pytest.mark.parametrize(
    ("key", "value", "seconds"),
    [
        ("business_hours", 0.0333333333333333, 120),  # 119.99999… s: rounded, not truncated
        ("business_hours", 1 / 3600, 1),
        ("business_hours", 42.5, 153_000),
        ("business_minutes", 2, 120),
        ("business_minutes", 0.5, 30),
    ],
)
def test_business_durations_round_to_the_nearest_second(
    key: str, value: float, seconds: int
) -> None:
    data = copy.deepcopy(RAW)
    policy = data["sla"]["policies"][0]
    del policy["business_hours"]
    policy[key] = value
    policy["escalate_after_business_hours"] = 0.0333333333333333
    policy["grace_minutes"] = 0.0166666666666667
    defs = definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)
    parsed = defs.sla_policies[0]
    assert parsed.business_seconds == seconds
    assert parsed.escalate_after_business_seconds == 120
    assert parsed.grace_seconds == 1


def test_a_policy_gives_exactly_one_duration() -> None:
    data = copy.deepcopy(RAW)
    data["sla"]["policies"][0]["business_minutes"] = 30
    with pytest.raises(
        DefinitionsError, match="sla.policies\\[0\\].business_hours: give exactly one"
    ):
        definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)
    del data["sla"]["policies"][0]["business_hours"]
    data["sla"]["policies"][0]["business_minutes"] = 0.001
    with pytest.raises(DefinitionsError, match="at least one second"):
        definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionsError, match="cannot read definitions file"):
        load_definitions(tmp_path / "nope.yaml")
