"""The shared definitions (stages, scoring, SLAs, attribution) loaded from one YAML file.

Loading validates everything and refuses a bad file with `DefinitionsError` naming the key
path and the problem. `Definitions.version` is a content hash stamped on every output record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.attribution import MODELS, AttributionSettings
from streams.core.calendar import BusinessCalendar, ClosedDays, PublicHolidays
from streams.core.errors import DefinitionsError, UnknownHolidayRegion
from streams.core.events import ACTIVITY_TYPES, REJECT_REASONS, TOUCH_TYPES, EventType
from streams.core.scoring import FIT_OPS, FitRule, ScoringRules

DEFAULT_PATH = Path(__file__).with_name("default_definitions.yaml")
STAGES = ("inquiry", "mql", "sal", "sql", "opportunity", "customer")
OFF_FUNNEL = ("recycled", "disqualified", "closed_lost")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Person:
    """Someone in the org chart (rep, manager, director, VP)."""

    id: str
    name: str
    role: str
    team_id: str | None
    manager_id: str | None


@dataclass(frozen=True, slots=True)
class Team:
    """A team with its business calendar and marketing's weekly MQL target for it."""

    id: str
    name: str
    calendar: BusinessCalendar
    manager_id: str | None
    weekly_mql_target: int


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """A promise: once a lead enters `starts_at`, one of `met_by` happens within
    `business_hours` of the owning team's calendar."""

    name: str
    starts_at: str
    met_by: frozenset[str]  # event types; "activity" may be narrowed by activity_types
    activity_types: frozenset[str] | None
    business_seconds: int
    warn_fraction: float | None
    grace_seconds: int
    escalate_after_business_seconds: int | None
    owner_team: str  # "sales" or "marketing": who is accountable


@dataclass(frozen=True, slots=True)
class Definitions:
    """Everything both teams agreed on; immutable once loaded."""

    version: str
    company: str
    scoring: ScoringRules
    recycle_reasons: frozenset[str]
    teams: Mapping[str, Team]
    people: Mapping[str, Person]
    sla_policies: tuple[SlaPolicy, ...]
    attribution: AttributionSettings
    default_team_id: str
    correction_window_days: int
    dedupe_ids_per_lead: int = 1000
    history_max_entries: int = 64
    recycle_cooldown_days: int = 14
    # the raw `alerts:` section, kept for the notifier (sinks/webhooks/routing.py validates it)
    alerts: Mapping[str, Any] | None = None
    # derived once from the fields above, for the per-event SLA code
    sla_policy_by_name: Mapping[str, SlaPolicy] = field(init=False, repr=False, compare=False)
    correction_window: timedelta = field(init=False, repr=False, compare=False)
    recycle_cooldown: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = MappingProxyType({policy.name: policy for policy in self.sla_policies})
        object.__setattr__(self, "sla_policy_by_name", by_name)
        object.__setattr__(self, "correction_window", timedelta(days=self.correction_window_days))
        object.__setattr__(self, "recycle_cooldown", timedelta(days=self.recycle_cooldown_days))

    def team_of(self, owner_id: str | None, team_id: str | None) -> Team:
        """The explicit team, else the owner's team, else the default team."""
        if team_id is not None and team_id in self.teams:
            return self.teams[team_id]
        person = self.people.get(owner_id) if owner_id else None
        if person is not None and person.team_id in self.teams:
            return self.teams[person.team_id]  # type: ignore[index]
        return self.teams[self.default_team_id]

    def manager_of(self, person_id: str | None) -> str | None:
        """The person's manager in the org chart (None at the top or for unknown people)."""
        person = self.people.get(person_id) if person_id else None
        return person.manager_id if person else None


def definitions_from_mapping(
    data: object, source: str = "<definitions>", public_holidays: PublicHolidays | None = None
) -> Definitions:
    """Validate an already-parsed definitions mapping.

    `public_holidays` resolves a team's `holidays: {country: …}` form (the core stays pure:
    streams.definitions_file passes the `holidays` library in); without it only explicit date
    lists are accepted.
    """
    try:
        return _build(data, public_holidays)
    except DefinitionsError as exc:
        raise DefinitionsError(f"{source}: {exc}") from None


# --- validation helpers -------------------------------------------------------------------


def _fail(path: str, problem: str) -> DefinitionsError:
    return DefinitionsError(f"{path}: {problem}")


def _map(data: object, path: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(path or "<root>", "must be a mapping")
    for key in data:
        if key not in allowed:
            raise _fail(f"{path}.{key}" if path else str(key), "unknown key")
    for key in sorted(required):
        if key not in data:
            raise _fail(f"{path}.{key}" if path else key, "missing")
    return data


def _int(value: object, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {value!r}")
    if value < minimum:
        raise _fail(path, f"must be >= {minimum}")
    return value


def _num(value: object, path: str, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise _fail(path, f"must be {'>' if strict else '>='} {minimum}")
    return float(value)


def _seconds(value: object, path: str, unit_seconds: int, strict: bool = False) -> int:
    """A duration in `unit_seconds` units as whole seconds, rounded to the nearest second
    (0.0333… hours is 120 s, not 119: a float's binary error never loses a second)."""
    return round(_num(value, path, strict=strict) * unit_seconds)


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "must be a non-empty string")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, "must be a list")
    return value


def _hours(spec: object, path: str) -> tuple[tuple[time, time], ...]:
    spans = []
    for i, item in enumerate(spec if isinstance(spec, list) else [spec]):
        where = f"{path}[{i}]" if isinstance(spec, list) else path
        text = _str(item, where)
        try:
            opens, closes = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise _fail(where, f"{text!r} is not HH:MM-HH:MM") from None
        if closes <= opens:
            raise _fail(where, "closing time must be after opening time")
        spans.append((opens, closes))
    return tuple(spans)


def _date(item: object, path: str) -> date:
    if isinstance(item, date):
        return item
    try:
        return date.fromisoformat(str(item))
    except ValueError:
        raise _fail(path, f"{item!r} is not a date (YYYY-MM-DD)") from None


def _days(value: object, path: str) -> tuple[list[date], list[tuple[int, int]]]:
    """One-off dates (YYYY-MM-DD) and yearly ones (MM-DD) of an `add`/`remove` list."""
    once: list[date] = []
    yearly: list[tuple[int, int]] = []
    for i, item in enumerate(_list(value, path)):
        text = str(item)
        if not isinstance(item, date) and len(text) == 5 and text[2] == "-":
            try:
                month_day = (int(text[:2]), int(text[3:]))
                date(2000, *month_day)  # a leap year: 02-29 is a valid yearly day
            except ValueError:
                raise _fail(f"{path}[{i}]", f"{item!r} is not a day of the year (MM-DD)") from None
            yearly.append(month_day)
            continue
        try:
            once.append(_date(item, f"{path}[{i}]"))
        except DefinitionsError:
            raise _fail(
                f"{path}[{i}]", f"{item!r} is not a date (YYYY-MM-DD) or a yearly day (MM-DD)"
            ) from None
    return once, yearly


def _closed_days(value: object, path: str, source: PublicHolidays | None) -> ClosedDays:
    """A team's `holidays`: a list of dates, or public holidays of a region plus company days."""
    if isinstance(value, list):
        return ClosedDays(added=(_date(item, f"{path}[{i}]") for i, item in enumerate(value)))
    d = _map(value, path, {"country", "subdivision", "categories", "skip", "add", "remove"}, set())
    public = None
    skipped: frozenset[str] = frozenset()
    if "country" in d:
        if source is None:
            raise _fail(
                f"{path}.country",
                "public holidays need a holiday source: load the file with "
                "streams.definitions_file.load_definitions (or list the dates instead)",
            )
        country = _str(d["country"], f"{path}.country").upper()
        subdivision = None if d.get("subdivision") is None else str(d["subdivision"])
        categories = (
            None
            if "categories" not in d
            else tuple(str(c) for c in _list(d["categories"], f"{path}.categories"))
        )
        try:
            public = source.lookup(country, subdivision, categories)
            if "skip" in d:
                skipped = frozenset(_list(d["skip"], f"{path}.skip"))
                known = source.holiday_names(country, subdivision, categories)
                for i, name in enumerate(_list(d["skip"], f"{path}.skip")):
                    if name not in known:
                        raise _fail(
                            f"{path}.skip[{i}]",
                            f"{country}{'-' + subdivision if subdivision else ''} has no holiday "
                            f"named {name!r} (a typo would skip nothing); one of {sorted(known)}",
                        )
        except UnknownHolidayRegion as exc:
            raise _fail(f"{path}.{exc.key}", str(exc)) from None
    elif {"subdivision", "categories", "skip"} & d.keys():
        raise _fail(f"{path}.country", "missing (subdivision, categories and skip need it)")
    added, added_yearly = _days(d.get("add", []), f"{path}.add")
    removed, removed_yearly = _days(d.get("remove", []), f"{path}.remove")
    return ClosedDays(public, added, removed, added_yearly, removed_yearly, skipped)


def _team(data: object, path: str, public_holidays: PublicHolidays | None = None) -> Team:
    d = _map(
        data,
        path,
        {"id", "name", "timezone", "hours", "holidays", "manager_id", "weekly_mql_target"},
        {"id", "timezone", "hours"},
    )
    tz = _str(d["timezone"], f"{path}.timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(f"{path}.timezone", f"unknown time zone {tz!r}") from None
    hours = _map(d["hours"], f"{path}.hours", set(WEEKDAYS), set())
    weekly = {
        WEEKDAYS.index(day): _hours(spec, f"{path}.hours.{day}") for day, spec in hours.items()
    }
    if not any(weekly.values()):
        raise _fail(f"{path}.hours", "at least one weekday needs business hours")
    holidays = _closed_days(d.get("holidays", []), f"{path}.holidays", public_holidays)
    team_id = _str(d["id"], f"{path}.id")
    return Team(
        id=team_id,
        name=str(d.get("name", team_id)),
        calendar=BusinessCalendar(tz, weekly, holidays),
        manager_id=d.get("manager_id"),
        weekly_mql_target=_int(d.get("weekly_mql_target", 0), f"{path}.weekly_mql_target"),
    )


def _scoring(data: object) -> ScoringRules:
    d = _map(
        data,
        "scoring",
        {"mql_threshold", "engagement_window_days", "hand_raisers", "touch_points", "fit_rules"},
        {"mql_threshold", "engagement_window_days"},
    )
    hand_raisers = frozenset(_list(d.get("hand_raisers", []), "scoring.hand_raisers"))
    for i, kind in enumerate(sorted(hand_raisers)):
        if kind not in TOUCH_TYPES:
            raise _fail(f"scoring.hand_raisers[{i}]", f"unknown touch type {kind!r}")
    points = _map(d.get("touch_points", {}), "scoring.touch_points", set(TOUCH_TYPES), set())
    touch_points = {
        k: _int(v, f"scoring.touch_points.{k}", minimum=-1000) for k, v in points.items()
    }
    rules = []
    for i, raw in enumerate(_list(d.get("fit_rules", []), "scoring.fit_rules")):
        where = f"scoring.fit_rules[{i}]"
        r = _map(
            raw,
            where,
            {"attribute", "op", "value", "points"},
            {"attribute", "op", "value", "points"},
        )
        if r["op"] not in FIT_OPS:
            raise _fail(f"{where}.op", f"must be one of {sorted(FIT_OPS)}")
        value = r["value"]
        if r["op"] == "in":
            value = tuple(_list(value, f"{where}.value"))
        elif r["op"] in ("gte", "lte"):
            value = _num(value, f"{where}.value", minimum=float("-inf"))
        rules.append(
            FitRule(
                _str(r["attribute"], f"{where}.attribute"),
                r["op"],
                value,
                _int(r["points"], f"{where}.points", minimum=-1000),
            )
        )
    return ScoringRules(
        mql_threshold=_int(d["mql_threshold"], "scoring.mql_threshold", minimum=1),
        engagement_window_days=_int(
            d["engagement_window_days"], "scoring.engagement_window_days", 1
        ),
        hand_raisers=hand_raisers,
        touch_points=MappingProxyType(touch_points),
        fit_rules=tuple(rules),
    )


_MET_BY = {str(e) for e in EventType} - {
    "lead_created",
    "lead_identified",
    "lead_merged",
    "lead_erased",
}


def _policy(data: object, path: str) -> SlaPolicy:
    d = _map(
        data,
        path,
        {
            "name",
            "starts_at",
            "met_by",
            "activity_types",
            "business_hours",
            "business_minutes",
            "warn_at",
            "grace_minutes",
            "escalate_after_business_hours",
            "accountable",
        },
        {"name", "starts_at", "met_by"},
    )
    if d["starts_at"] not in STAGES + OFF_FUNNEL:
        raise _fail(f"{path}.starts_at", f"unknown stage {d['starts_at']!r}")
    met_by = frozenset(_list(d["met_by"], f"{path}.met_by"))
    for i, kind in enumerate(sorted(met_by)):
        if kind not in _MET_BY:
            raise _fail(f"{path}.met_by[{i}]", f"unknown or unusable event type {kind!r}")
    activity_types = None
    if "activity_types" in d:
        activity_types = frozenset(_list(d["activity_types"], f"{path}.activity_types"))
        for kind in activity_types:
            if kind not in ACTIVITY_TYPES:
                raise _fail(f"{path}.activity_types", f"unknown activity type {kind!r}")
    warn = d.get("warn_at")
    if warn is not None:
        warn = _num(warn, f"{path}.warn_at", strict=True)
        if warn >= 1:
            raise _fail(f"{path}.warn_at", "must be a fraction between 0 and 1")
    if ("business_hours" in d) == ("business_minutes" in d):
        raise _fail(
            f"{path}.business_hours", "give exactly one of business_hours, business_minutes"
        )
    if "business_hours" in d:
        business_seconds = _seconds(d["business_hours"], f"{path}.business_hours", 3600, True)
    else:
        business_seconds = _seconds(d["business_minutes"], f"{path}.business_minutes", 60, True)
    if business_seconds < 1:
        raise _fail(f"{path}.business_hours", "must be at least one second")
    escalate = d.get("escalate_after_business_hours")
    return SlaPolicy(
        name=_str(d["name"], f"{path}.name"),
        starts_at=d["starts_at"],
        met_by=met_by,
        activity_types=activity_types,
        business_seconds=business_seconds,
        warn_fraction=warn,
        grace_seconds=_seconds(d.get("grace_minutes", 0), f"{path}.grace_minutes", 60),
        escalate_after_business_seconds=(
            None
            if escalate is None
            else _seconds(escalate, f"{path}.escalate_after_business_hours", 3600, True)
        ),
        owner_team=str(d.get("accountable", "sales")),
    )


def _build(data: object, public_holidays: PublicHolidays | None) -> Definitions:
    d = _map(
        data,
        "",
        {
            "company",
            "teams",
            "people",
            "default_team",
            "scoring",
            "lifecycle",
            "sla",
            "attribution",
            "alerts",
        },
        {"teams", "scoring", "sla"},
    )
    teams: dict[str, Team] = {}
    for i, raw in enumerate(_list(d["teams"], "teams")):
        team = _team(raw, f"teams[{i}]", public_holidays)
        if team.id in teams:
            raise _fail(f"teams[{i}].id", f"duplicate team id {team.id!r}")
        teams[team.id] = team
    if not teams:
        raise _fail("teams", "at least one team is required")
    people: dict[str, Person] = {}
    for i, raw in enumerate(_list(d.get("people", []), "people")):
        where = f"people[{i}]"
        p = _map(raw, where, {"id", "name", "role", "team_id", "manager_id"}, {"id", "role"})
        person = Person(
            _str(p["id"], f"{where}.id"),
            str(p.get("name", p["id"])),
            str(p["role"]),
            p.get("team_id"),
            p.get("manager_id"),
        )
        if person.team_id is not None and person.team_id not in teams:
            raise _fail(f"{where}.team_id", f"unknown team {person.team_id!r}")
        people[person.id] = person
    for i, person in enumerate(people.values()):
        if person.manager_id is not None and person.manager_id not in people:
            raise _fail(f"people[{i}].manager_id", f"unknown person {person.manager_id!r}")
    for i, team in enumerate(teams.values()):
        if team.manager_id is not None and team.manager_id not in people:
            raise _fail(f"teams[{i}].manager_id", f"unknown person {team.manager_id!r}")
    default_team = d.get("default_team", next(iter(teams)))
    if default_team not in teams:
        raise _fail("default_team", f"unknown team {default_team!r}")
    lifecycle = _map(
        d.get("lifecycle", {}),
        "lifecycle",
        {
            "recycle_reasons",
            "recycle_cooldown_days",
            "correction_window_days",
            "dedupe_ids_per_lead",
            "history_max_entries",
        },
        set(),
    )
    recycle = frozenset(_list(lifecycle.get("recycle_reasons", []), "lifecycle.recycle_reasons"))
    for i, reason in enumerate(sorted(recycle)):
        if reason not in REJECT_REASONS:
            raise _fail(f"lifecycle.recycle_reasons[{i}]", f"unknown rejection reason {reason!r}")
    sla = _map(d["sla"], "sla", {"policies"}, {"policies"})
    policies = tuple(
        _policy(raw, f"sla.policies[{i}]")
        for i, raw in enumerate(_list(sla["policies"], "sla.policies"))
    )
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise _fail("sla.policies", "policy names must be unique")
    a = _map(
        d.get("attribution", {}),
        "attribution",
        {"lookback_days", "half_life_days", "models"},
        set(),
    )
    models = tuple(_list(a.get("models", list(MODELS)), "attribution.models"))
    for i, model in enumerate(models):
        if model not in MODELS:
            raise _fail(
                f"attribution.models[{i}]", f"unknown model {model!r}; one of {list(MODELS)}"
            )
    attribution = AttributionSettings(
        lookback_days=_int(a.get("lookback_days", 90), "attribution.lookback_days", minimum=1),
        half_life_days=_num(a.get("half_life_days", 7), "attribution.half_life_days", strict=True),
        models=models,
    )
    alerts = d.get("alerts")
    if alerts is not None and not isinstance(alerts, dict):
        raise _fail("alerts", "must be a mapping")
    canonical = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    if public_holidays is not None and any(
        isinstance(team, dict)
        and isinstance(team.get("holidays"), dict)
        and "country" in team["holidays"]
        for team in d["teams"]
    ):
        # the same file under another release of the holiday source may close other days
        canonical += "|" + public_holidays.name
    return Definitions(
        version=hashlib.sha256(canonical.encode()).hexdigest()[:12],
        company=str(d.get("company", "")),
        scoring=_scoring(d["scoring"]),
        recycle_reasons=recycle,
        teams=MappingProxyType(teams),
        people=MappingProxyType(people),
        sla_policies=policies,
        attribution=attribution,
        default_team_id=default_team,
        correction_window_days=_int(
            lifecycle.get("correction_window_days", 30), "lifecycle.correction_window_days", 1
        ),
        dedupe_ids_per_lead=_int(
            lifecycle.get("dedupe_ids_per_lead", 1000), "lifecycle.dedupe_ids_per_lead", 1
        ),
        history_max_entries=_int(
            lifecycle.get("history_max_entries", 64), "lifecycle.history_max_entries", 2
        ),
        recycle_cooldown_days=_int(
            lifecycle.get("recycle_cooldown_days", 14), "lifecycle.recycle_cooldown_days"
        ),
        alerts=MappingProxyType(alerts) if alerts is not None else None,
    )
