"""Output records of the core: the one shape shared by replay files, output topics and ClickHouse.

Every record carries `record_id` (deterministic: the same input and definitions always give the
same id, so re-deliveries can be deduplicated downstream) and `definitions_version` (the content
hash of the definitions that produced it). Transitions, SLA records and credits also carry
`revision` (per lead, increasing with every record the lead emits: the version downstream keeps
the highest of) and `deleted` (a retraction: a late event showed the record no longer holds). `as_dict()` gives the JSON-ready form: datetimes as
ISO-8601 UTC strings ending in `Z`, money as integer minor units.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class OutputKind(StrEnum):
    """Which output stream a record belongs to (one output topic and one replay file each)."""

    TRANSITION = "transition"
    SLA = "sla"
    ATTRIBUTION = "attribution"
    LEAD_STATE = "lead_state"


def iso_z(at: datetime | None) -> str | None:
    """Format a tz-aware datetime as ISO-8601 UTC with a trailing `Z` (None stays None)."""
    if at is None:
        return None
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.isoformat().removesuffix("+00:00") + "Z"


def record_id(*parts: object) -> str:
    """A deterministic id from the parts that make a record unique (hex, 32 chars)."""
    joined = "\x1f".join(["" if p is None else str(p) for p in parts])
    return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _compile_as_dict(cls: type) -> Callable[[Any], dict[str, Any]]:
    """`as_dict` for one record class, straight-line: one is called per output record."""
    items = []
    for f in fields(cls):
        declared = str(f.type)
        if "datetime" in declared:
            items.append(f"{f.name!r}: iso_z(record.{f.name})")
        elif declared.startswith("tuple"):
            items.append(f"{f.name!r}: jsonable(record.{f.name})")
        else:
            items.append(f"{f.name!r}: record.{f.name}")
    source = "def as_dict(record):\n    return {" + ", ".join(items) + "}\n"
    namespace: dict[str, Any] = {"iso_z": iso_z, "jsonable": _jsonable}
    exec(source, namespace)  # noqa: S102 — generated from the class's own field list
    return namespace["as_dict"]  # type: ignore[no-any-return]


_AS_DICT: dict[type, Callable[[Any], dict[str, Any]]] = {}


class _Record:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form (field order as declared)."""
        convert = _AS_DICT.get(type(self))
        if convert is None:
            convert = _AS_DICT[type(self)] = _compile_as_dict(type(self))
        return convert(self)


@dataclass(frozen=True, slots=True)
class Transition(_Record):
    """A lead moved from one stage to another because of `event_id` at event time `at`.

    `from_stage` is None for the first stage. `skipped_stages` lists funnel stages jumped over
    (in funnel order). `episode` counts passes through the funnel (1, then 2 after a recycle
    and a new MQL, ...). `reason` is the rejection/loss reason when the move is one.
    """

    record_id: str
    lead_id: str
    from_stage: str | None
    to_stage: str
    at: datetime
    event_id: str
    skipped_stages: tuple[str, ...]
    episode: int
    reason: str | None
    owner_id: str | None
    team_id: str | None
    definitions_version: str
    revision: int = 0
    deleted: bool = False

    kind = OutputKind.TRANSITION


class SlaStatus(StrEnum):
    """Final-state status of an SLA instance (DESIGN.md §6)."""

    OPEN = "open"
    MET = "met"
    BREACHED = "breached"
    CANCELLED = "cancelled"


class SlaEvent(StrEnum):
    """What happened to an SLA instance in this record."""

    STARTED = "started"
    WARNED = "warned"
    MET = "met"
    BREACHED = "breached"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"
    CORRECTED = "corrected"
    RETRACTED = "retracted"


@dataclass(frozen=True, slots=True)
class SlaRecord(_Record):
    """One change of one SLA instance; the latest record of an instance is its final state.

    `instance_id` identifies the instance (lead, policy, episode, start); `record_id` identifies
    this change. For marketing's weekly MQL target, `lead_id` is None, `team_id` is the team,
    `started_at`/`due_at` bound the ISO week and `target`/`actual` hold the counts.
    `business_seconds` is the business time from start to met (None until met).
    """

    record_id: str
    instance_id: str
    lead_id: str | None
    policy: str
    event: SlaEvent
    status: SlaStatus
    started_at: datetime
    due_at: datetime
    warn_at: datetime | None
    breach_at: datetime | None
    met_at: datetime | None
    breached_at: datetime | None
    warned_at: datetime | None
    escalated_at: datetime | None
    corrected_at: datetime | None
    owner_id: str | None
    team_id: str | None
    escalate_to: str | None
    business_seconds: int | None
    target: int | None
    actual: int | None
    at: datetime
    definitions_version: str
    revision: int = 0
    deleted: bool = False

    kind = OutputKind.SLA


@dataclass(frozen=True, slots=True)
class AttributionCredit(_Record):
    """Credit of one touch for one trigger under one model (DESIGN.md §4).

    `touch_event_id` is None and `channel` is "unattributed" for the single record carrying the
    whole amount when no touch falls in the lookback window. `credit_minor` is in minor units of
    `currency`; the credits of one (trigger, model) sum exactly to `amount_minor`.
    """

    record_id: str
    lead_id: str
    opportunity_id: str
    trigger: str
    trigger_at: datetime
    model: str
    touch_event_id: str | None
    touch_at: datetime | None
    channel: str
    campaign_id: str | None
    weight: float
    credit_minor: int
    amount_minor: int
    currency: str
    definitions_version: str
    revision: int = 0
    deleted: bool = False

    kind = OutputKind.ATTRIBUTION


@dataclass(frozen=True, slots=True)
class LeadStateSnapshot(_Record):
    """The lead's state after an event: written on every change, the latest one wins.

    `erased` is True once `lead_erased` was applied: personal fields are then None and every
    downstream store must remove the lead's personal data. `merged_into` is set on a duplicate
    lead after `lead_merged`. `version` increases with every snapshot of the lead (use it to
    pick the latest, e.g. ReplacingMergeTree's version column).
    """

    record_id: str
    lead_id: str
    stage: str
    episode: int
    score: int
    fit_score: int
    engagement_score: int
    owner_id: str | None
    team_id: str | None
    source: str | None
    first_channel: str | None
    first_campaign_id: str | None
    created_at: datetime | None
    stage_entered_at: datetime
    updated_at: datetime
    erased: bool
    merged_into: str | None
    version: int
    definitions_version: str

    kind = OutputKind.LEAD_STATE


Record = Transition | SlaRecord | AttributionCredit | LeadStateSnapshot


@dataclass(frozen=True, slots=True)
class DeadLetter(_Record):
    """Input that could not be applied, kept with a readable reason and the original bytes/line.

    In replay, `source_topic` is None and `line` is the 1-based line number; in the pipeline,
    `line` is None and topic/partition/offset locate the original record.
    """

    record_id: str
    reason: str
    error_class: str
    raw: str
    line: int | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    at: datetime | None
