"""Row mapping: output record dicts (records.py `as_dict()`) → ClickHouse rows, per table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from sinks.clickhouse import tables

COLUMNS: dict[str, tuple[str, ...]] = {
    tables.EVENTS: (
        "event_id",
        "event_type",
        "lead_id",
        "anonymous_id",
        "occurred_at",
        "source",
        "payload",
    ),
    tables.TRANSITIONS: (
        "record_id",
        "lead_id",
        "from_stage",
        "to_stage",
        "at",
        "event_id",
        "skipped_stages",
        "episode",
        "reason",
        "owner_id",
        "team_id",
        "definitions_version",
        "revision",
        "deleted",
    ),
    tables.LEAD_STATE: (
        "record_id",
        "lead_id",
        "stage",
        "episode",
        "score",
        "fit_score",
        "engagement_score",
        "owner_id",
        "team_id",
        "source",
        "first_channel",
        "first_campaign_id",
        "created_at",
        "stage_entered_at",
        "updated_at",
        "erased",
        "merged_into",
        "version",
        "definitions_version",
    ),
    tables.SLA: (
        "record_id",
        "instance_id",
        "lead_id",
        "policy",
        "event",
        "status",
        "started_at",
        "due_at",
        "warn_at",
        "breach_at",
        "met_at",
        "breached_at",
        "warned_at",
        "escalated_at",
        "corrected_at",
        "owner_id",
        "team_id",
        "escalate_to",
        "business_seconds",
        "target",
        "actual",
        "at",
        "definitions_version",
        "version",
        "deleted",
    ),
    tables.ATTRIBUTION: (
        "record_id",
        "lead_id",
        "opportunity_id",
        "trigger",
        "trigger_at",
        "model",
        "touch_event_id",
        "touch_at",
        "channel",
        "campaign_id",
        "weight",
        "credit_minor",
        "amount_minor",
        "currency",
        "definitions_version",
        "revision",
        "deleted",
    ),
    tables.DEAD_LETTERS: (
        "record_id",
        "reason",
        "error_class",
        "raw",
        "line",
        "source_topic",
        "source_partition",
        "source_offset",
        "at",
    ),
}
TIME_COLUMNS = frozenset(
    {
        "occurred_at",
        "at",
        "created_at",
        "stage_entered_at",
        "updated_at",
        "started_at",
        "due_at",
        "warn_at",
        "breach_at",
        "met_at",
        "breached_at",
        "warned_at",
        "escalated_at",
        "corrected_at",
        "trigger_at",
        "touch_at",
    }
)


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 text (…Z) → tz-aware UTC datetime; None stays None."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _generic(table: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    columns = COLUMNS[table]

    def to_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            parse_time(record.get(c)) if c in TIME_COLUMNS else record.get(c) for c in columns
        )

    return to_row


def _versioned(table: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Rows of a versioned table: `deleted` as 0/1; SLA rows keep the revision as `version`."""
    generic = _generic(table)

    def to_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
        extra = {
            "deleted": 1 if record.get("deleted") else 0,
            "revision": record.get("revision", 0),
        }
        if table == tables.SLA:
            extra["version"] = record.get("revision", 0)
        return generic({**record, **extra})

    return to_row


def _lead_state_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return _generic(tables.LEAD_STATE)({**record, "erased": 1 if record.get("erased") else 0})


def event_row(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """An accepted canonical input event → events_raw row (the payload keeps personal data)."""
    return (
        event["event_id"],
        event["event_type"],
        event.get("lead_id") or "",
        event.get("anonymous_id"),
        parse_time(event["occurred_at"]),
        event["source"],
        orjson.dumps(event).decode(),
    )


MAPPERS: dict[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]] = {
    tables.TRANSITIONS: _versioned(tables.TRANSITIONS),
    tables.LEAD_STATE: _lead_state_row,
    tables.SLA: _versioned(tables.SLA),
    tables.ATTRIBUTION: _versioned(tables.ATTRIBUTION),
    tables.DEAD_LETTERS: _generic(tables.DEAD_LETTERS),
    tables.EVENTS: event_row,
}
