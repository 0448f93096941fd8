"""Definitions loading: the packaged default is valid, bad files are refused naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.core.definitions import DEFAULT_PATH, definitions_from_mapping
from streams.core.errors import DefinitionsError
from streams.definitions_file import load_definitions

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
    assert definitions_from_mapping(data).version != load_definitions().version


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("scoring", "mql_threshold"), 0, "scoring.mql_threshold: must be >= 1"),
        (("teams", 0, "timezone"), "Mars/Olympus", "teams[0].timezone: unknown time zone"),
        (("teams", 0, "holidays", 0), "someday", "teams[0].holidays[0]"),
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
        definitions_from_mapping(data)
    assert message in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionsError, match="cannot read definitions file"):
        load_definitions(tmp_path / "nope.yaml")
