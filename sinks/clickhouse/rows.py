"""Row mapping: output record dicts (records.py `as_dict()`) → ClickHouse rows, per table."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from sinks.clickhouse import tables
from streams.core.records import record_id

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


# --- dead letters: always insertable, whatever the data (the sink's last resort) ----------

_REASON_CHARS = 1000
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)


def printable(raw: bytes) -> str:
    """Text as it is; anything else (broken Avro, control bytes) as `base64:…`, so nothing is
    lost and the column stays valid UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if (
        text is None
        or text.startswith("base64:")
        or any(ch < " " and ch not in "\t\n\r" for ch in text)
    ):
        return "base64:" + base64.b64encode(raw).decode()
    return text


def _text(value: Any, limit: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
    return text if limit is None else text[:limit]


def _int_in(value: Any, bounds: tuple[int, int]) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if bounds[0] <= number <= bounds[1] else None


def _time_or_none(value: Any) -> datetime | None:
    try:
        at = parse_time(value)
    except (TypeError, ValueError, OverflowError):
        return None
    # DateTime holds 1970..2105 (UInt32 seconds)
    return at if at is None or 0 <= at.timestamp() < 2**32 else None


def dead_letter_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A dead-letter record (replay's, the worker's, the sink's own) → a dead_letters row whose
    every value fits its column: text forced to str, numbers out of range to NULL, so this row
    cannot itself be refused."""
    raw = record.get("raw")
    return (
        _text(record.get("record_id")) or "unknown",
        _text(record.get("reason"), _REASON_CHARS),
        _text(record.get("error_class"), 200) or "Unknown",
        printable(raw) if isinstance(raw, bytes) else _text(raw),
        _int_in(record.get("line"), _UINT64),
        None if record.get("source_topic") is None else _text(record.get("source_topic"), 300),
        _int_in(record.get("source_partition"), _INT32),
        _int_in(record.get("source_offset"), _INT64),
        _time_or_none(record.get("at")),
    )


def dlq_row(
    headers: Iterable[tuple[str, bytes]],
    value: bytes,
    dlq_topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
) -> tuple[Any, ...]:
    """A record of the dead-letter topic → its dead_letters row: the story from the worker's
    headers (reason, error_class, source_topic/partition/offset), the original bytes as the raw
    value (never parsed). A record without those headers (not written by the worker) keeps its
    own place in the dead-letter topic as its source."""
    found = {name: raw for name, raw in headers if isinstance(raw, bytes)}
    at = None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    if "reason" not in found or "source_topic" not in found:
        return dead_letter_row(
            {
                "record_id": record_id("dlq", dlq_topic, partition, offset),
                "reason": "dead-letter record without leadflow's headers (reason, source_topic)",
                "error_class": "Unknown",
                "raw": value,
                "source_topic": dlq_topic,
                "source_partition": partition,
                "source_offset": offset,
                "at": at,
            }
        )
    source = tuple(
        _text(found.get(h)) for h in ("source_topic", "source_partition", "source_offset")
    )
    reason = _text(found["reason"])
    return dead_letter_row(
        {
            # a re-delivered dead letter (the worker re-applies input after a restart) has the
            # same source and reason: one row
            "record_id": record_id("dlq", *source, reason),
            "reason": reason,
            "error_class": found.get("error_class"),
            "raw": value,
            "source_topic": source[0],
            "source_partition": source[1],
            "source_offset": source[2],
            "at": at,
        }
    )


MAPPERS: dict[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]] = {
    tables.TRANSITIONS: _versioned(tables.TRANSITIONS),
    tables.LEAD_STATE: _lead_state_row,
    tables.SLA: _versioned(tables.SLA),
    tables.ATTRIBUTION: _versioned(tables.ATTRIBUTION),
    tables.DEAD_LETTERS: dead_letter_row,
    tables.EVENTS: event_row,
}
