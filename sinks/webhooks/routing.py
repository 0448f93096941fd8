"""The definitions' `alerts:` section: endpoints, who is told of what, and the org-chart lookups.

`load_alerts(defs)` validates the raw section the core keeps (`Definitions.alerts`) against the
org chart and refuses unknown people, teams, endpoints, kinds and roles naming the key. Nothing
here reads the environment: endpoint URLs and secrets are resolved in `endpoints.py`, only when
`leadflow alerts` starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sinks.webhooks.errors import AlertsConfigError
from streams.core.definitions import Definitions

WEEKLY_TARGET_POLICY = "mql_weekly_target"  # streams.core.sla.WEEKLY_TARGET_POLICY


class Kind(StrEnum):
    """What an alert tells."""

    WARNED = "warned"
    BREACHED = "breached"
    ESCALATED = "escalated"
    CORRECTED = "corrected"
    TARGET_MISSED = "target_missed"


class Role(StrEnum):
    """Who, relative to the record, is told."""

    OWNER = "owner"  # the lead's owner rep (no owner: the team's manager)
    MANAGER = "manager"  # the owner's manager (no owner or manager: the team's manager)
    ESCALATE_TO = "escalate_to"  # the manager's manager (the record's escalate_to when set)
    TEAM = "team"  # the team's channel(s)
    TEAM_MANAGER = "team_manager"  # the manager of the record's team
    MARKETING_OWNER = "marketing_owner"  # alerts.marketing_owner


FORMATS = ("slack", "teams", "standard")
DEFAULT_ROUTES: dict[Kind, tuple[Role, ...]] = {
    Kind.WARNED: (Role.OWNER,),
    Kind.BREACHED: (Role.MANAGER, Role.OWNER),
    Kind.ESCALATED: (Role.ESCALATE_TO,),
    Kind.TARGET_MISSED: (Role.MARKETING_OWNER, Role.TEAM_MANAGER),
}
# grouping waits per format when neither the endpoint nor alerts.delivery sets one
_FORMAT_RATE_PER_S = {"slack": 1.0, "teams": 1.0, "standard": 0.0}
_FORMAT_IN_FLIGHT = {"slack": 1, "teams": 1, "standard": 8}


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Timeouts, retry schedule and grouping shared by all endpoints (seconds)."""

    timeout_s: float = 15.0
    retry_base_s: float = 5.0
    retry_factor: float = 3.0
    retry_max_delay_s: float = 3600.0
    max_attempts: int = 12  # 5 s, 15 s, 45 s, ... capped at 1 h: about 5.5 h in all
    retry_after_max_s: float = 3600.0
    group_wait_s: float = 30.0
    max_age_s: float = 24 * 3600.0  # older records (a backfill) are never alerted
    dedupe_retention_s: float = 7 * 24 * 3600.0

    def retry_window_s(self) -> float:
        """The longest time from the first attempt to the last (without jitter)."""
        return sum(self.retry_delay_s(n) for n in range(1, self.max_attempts))

    def retry_delay_s(self, attempt: int) -> float:
        """Delay after failed attempt number `attempt` (1-based), before jitter."""
        return float(
            min(self.retry_max_delay_s, self.retry_base_s * self.retry_factor ** (attempt - 1))
        )


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One configured endpoint, as written (its URL/secrets are environment variable names)."""

    name: str
    format: str
    url_env: str | None
    url: str | None
    secrets_env: str | None
    timeout_s: float
    rate_per_s: float  # 0: no limit
    group_wait_s: float
    max_in_flight: int
    quiet_hours: bool
    allow_private: bool


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person (or a team channel, `person_id` None) told of an alert."""

    person_id: str | None
    name: str
    team_id: str  # whose calendar and time zone apply
    role: str


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """The validated `alerts:` section."""

    endpoints: Mapping[str, EndpointSpec]
    person_endpoints: Mapping[str, tuple[str, ...]]
    team_endpoints: Mapping[str, tuple[str, ...]]
    routes: Mapping[Kind, tuple[Role, ...]]
    quiet: Mapping[Kind, str]  # "hold" or "send"
    marketing_owner: str | None
    delivery: DeliverySettings = field(default_factory=DeliverySettings)


def _fail(path: str, problem: str) -> AlertsConfigError:
    return AlertsConfigError(f"alerts.{path}: {problem}")


def _mapping(value: object, path: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "must be a mapping")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise _fail(f"{path}.{key}", f"unknown key; one of {sorted(allowed)}")
    return value


def _number(value: object, path: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise _fail(path, f"must be a number >= {minimum}, got {value!r}")
    return float(value)


def _names(value: object, path: str, endpoints: Mapping[str, EndpointSpec]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for i, name in enumerate(items):
        if name not in endpoints:
            raise _fail(f"{path}[{i}]", f"unknown endpoint {name!r}; one of {sorted(endpoints)}")
    return tuple(items)


_DELIVERY_KEYS = {f for f in DeliverySettings.__dataclass_fields__}
_ENDPOINT_KEYS = {
    "format",
    "url_env",
    "url",
    "secrets_env",
    "timeout_s",
    "rate_per_s",
    "group_wait_s",
    "max_in_flight",
    "quiet_hours",
    "allow_private",
}


def _delivery(raw: object) -> DeliverySettings:
    d = _mapping(raw, "delivery", _DELIVERY_KEYS)
    values: dict[str, Any] = {}
    for key, value in d.items():
        if key == "max_attempts":
            values[key] = int(_number(value, f"delivery.{key}", 1))
        else:
            values[key] = _number(value, f"delivery.{key}")
    return DeliverySettings(**values)


def _endpoint(name: str, raw: object, delivery: DeliverySettings) -> EndpointSpec:
    path = f"endpoints.{name}"
    d = _mapping(raw, path, _ENDPOINT_KEYS)
    fmt = d.get("format")
    if fmt not in FORMATS:
        raise _fail(f"{path}.format", f"must be one of {list(FORMATS)}, got {fmt!r}")
    if ("url_env" in d) == ("url" in d):
        raise _fail(path, "give exactly one of url_env (an environment variable name) or url")
    if fmt == "standard" and "secrets_env" not in d:
        raise _fail(
            f"{path}.secrets_env",
            "missing: a Standard Webhooks endpoint is signed; name the variable holding its "
            "whsec_ secret(s)",
        )
    if fmt != "standard" and "secrets_env" in d:
        raise _fail(f"{path}.secrets_env", f"a {fmt} webhook is not signed; remove the key")
    group_wait = d.get("group_wait_s", delivery.group_wait_s)
    return EndpointSpec(
        name=name,
        format=fmt,
        url_env=d.get("url_env"),
        url=d.get("url"),
        secrets_env=d.get("secrets_env"),
        timeout_s=_number(d.get("timeout_s", delivery.timeout_s), f"{path}.timeout_s", 0.001),
        rate_per_s=_number(d.get("rate_per_s", _FORMAT_RATE_PER_S[fmt]), f"{path}.rate_per_s"),
        group_wait_s=_number(group_wait, f"{path}.group_wait_s"),
        max_in_flight=int(
            _number(d.get("max_in_flight", _FORMAT_IN_FLIGHT[fmt]), f"{path}.max_in_flight", 1)
        ),
        quiet_hours=bool(d.get("quiet_hours", True)),
        allow_private=bool(d.get("allow_private", False)),
    )


def load_alerts(defs: Definitions) -> AlertsConfig:
    """Validate `defs.alerts` against the org chart; AlertsConfigError names the bad key."""
    if defs.alerts is None:
        raise AlertsConfigError(
            "the definitions have no alerts: section; add one (see docs/alerts.md) to run "
            "`leadflow alerts`"
        )
    raw = _mapping(
        dict(defs.alerts),
        "<section>",
        {"endpoints", "people", "teams", "routes", "quiet_hours", "marketing_owner", "delivery"},
    )
    delivery = _delivery(raw.get("delivery", {}))
    endpoints = {
        str(name): _endpoint(str(name), spec, delivery)
        for name, spec in _mapping(raw.get("endpoints", {}), "endpoints").items()
    }
    person_endpoints: dict[str, tuple[str, ...]] = {}
    for person, names in _mapping(raw.get("people", {}), "people").items():
        if person not in defs.people:
            raise _fail(f"people.{person}", "unknown person (not in the org chart's people:)")
        person_endpoints[person] = _names(names, f"people.{person}", endpoints)
    team_endpoints: dict[str, tuple[str, ...]] = {}
    for team, names in _mapping(raw.get("teams", {}), "teams").items():
        if team not in defs.teams:
            raise _fail(f"teams.{team}", f"unknown team; one of {sorted(defs.teams)}")
        team_endpoints[team] = _names(names, f"teams.{team}", endpoints)
    routes = dict(DEFAULT_ROUTES)
    for kind, roles in _mapping(raw.get("routes", {}), "routes").items():
        if kind == Kind.CORRECTED:
            raise _fail(
                "routes.corrected",
                "a correction always goes to everyone who was told of the breach; remove the key",
            )
        if kind not in DEFAULT_ROUTES:
            raise _fail(f"routes.{kind}", f"unknown alert kind; one of {sorted(DEFAULT_ROUTES)}")
        items = roles if isinstance(roles, list) else [roles]
        for i, role in enumerate(items):
            if role not in set(Role):
                raise _fail(f"routes.{kind}[{i}]", f"unknown role {role!r}; one of {list(Role)}")
        routes[Kind(kind)] = tuple(Role(r) for r in items)
    quiet: dict[Kind, str] = {}
    for kind, mode in _mapping(raw.get("quiet_hours", {}), "quiet_hours").items():
        if kind not in set(Kind) or kind == Kind.CORRECTED:
            raise _fail(
                f"quiet_hours.{kind}", f"unknown alert kind; one of {sorted(DEFAULT_ROUTES)}"
            )
        if mode not in ("hold", "send"):
            raise _fail(f"quiet_hours.{kind}", f"must be hold or send, got {mode!r}")
        quiet[Kind(kind)] = mode
    owner = raw.get("marketing_owner")
    if owner is not None and owner not in defs.people:
        raise _fail("marketing_owner", f"unknown person {owner!r} (not in the org chart's people:)")
    if owner is None and Role.MARKETING_OWNER in {r for rs in routes.values() for r in rs}:
        raise _fail("marketing_owner", "missing: a route names marketing_owner")
    return AlertsConfig(
        endpoints=endpoints,
        person_endpoints=person_endpoints,
        team_endpoints=team_endpoints,
        routes=routes,
        quiet=quiet,
        marketing_owner=owner,
        delivery=delivery,
    )


def kind_of(record: Mapping[str, Any]) -> Kind | None:
    """The alert kind an SLA record asks for (None: it only updates the instance's state).

    A `corrected` record whose status is breached (a re-fold showed that an instance told as
    met was in fact breached) is a breach; any other correction, and a retraction (`deleted`,
    event `retracted`), withdraws what was told."""
    event, status = record.get("event"), record.get("status")
    if record.get("deleted") or event == "retracted":
        return Kind.CORRECTED
    if record.get("policy") == WEEKLY_TARGET_POLICY:
        if event == "breached" or (event == "corrected" and status == "breached"):
            return Kind.TARGET_MISSED
        return None
    if event == "corrected":
        return Kind.BREACHED if status == "breached" else Kind.CORRECTED
    if event in ("warned", "breached", "escalated"):
        return Kind(event)
    return None


def team_of(record: Mapping[str, Any], defs: Definitions) -> str:
    """The record's team: explicit, else the owner's, else the default team."""
    return defs.team_of(record.get("owner_id"), record.get("team_id")).id


def _person(pid: str | None, role: str, team_id: str, defs: Definitions) -> Recipient | None:
    person = defs.people.get(pid) if pid else None
    if person is None:
        return None
    home = person.team_id if person.team_id in defs.teams else team_id
    return Recipient(person.id, person.name, str(home), role)


def recipients(
    kind: Kind, record: Mapping[str, Any], config: AlertsConfig, defs: Definitions
) -> dict[str, tuple[Recipient, ...]]:
    """Endpoint name → who is told there, for a warned/breached/escalated/target_missed record.

    A person without endpoints of their own is told in their team's channel (else the record's
    team's). A lead without owner goes to its team's manager.
    """
    team_id = team_of(record, defs)
    team = defs.teams[team_id]
    owner_id = record.get("owner_id") if record.get("owner_id") in defs.people else None
    manager_id = defs.manager_of(owner_id) if owner_id else None
    manager_id = manager_id or team.manager_id
    people: list[Recipient | None] = []
    channels: list[str] = []
    for role in config.routes.get(kind, ()):
        if role is Role.OWNER:
            people.append(_person(owner_id or team.manager_id, role, team_id, defs))
        elif role is Role.MANAGER:
            people.append(_person(manager_id, role, team_id, defs))
        elif role is Role.ESCALATE_TO:
            above = record.get("escalate_to") or defs.manager_of(manager_id) or manager_id
            people.append(_person(above, role, team_id, defs))
        elif role is Role.TEAM_MANAGER:
            people.append(_person(team.manager_id, role, team_id, defs))
        elif role is Role.MARKETING_OWNER:
            people.append(_person(config.marketing_owner, role, team_id, defs))
        elif role is Role.TEAM:
            channels.append(team_id)
    told: dict[str, list[Recipient]] = {}
    seen: set[tuple[str, str | None]] = set()
    for who in people:
        if who is None:
            continue
        names = (
            config.person_endpoints.get(who.person_id or "")
            or config.team_endpoints.get(who.team_id)
            or config.team_endpoints.get(team_id, ())
        )
        for name in names:
            if (name, who.person_id) not in seen:
                seen.add((name, who.person_id))
                told.setdefault(name, []).append(who)
    for channel in channels:
        for name in config.team_endpoints.get(channel, ()):
            if (name, None) not in seen:
                seen.add((name, None))
                told.setdefault(name, []).append(
                    Recipient(None, defs.teams[channel].name, channel, Role.TEAM)
                )
    return {name: tuple(who) for name, who in told.items()}
