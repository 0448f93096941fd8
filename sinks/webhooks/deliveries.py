"""Rows of ClickHouse `alert_deliveries`: messages the notifier gave up on, and replays of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sinks.clickhouse import tables
from sinks.clickhouse.backend import Backend

TABLE = tables.ALERT_DELIVERIES
COLUMNS = (
    "message_id",
    "endpoint",
    "format",
    "status",
    "attempts",
    "last_status_code",
    "last_response",
    "alert_ids",
    "kinds",
    "lead_ids",
    "instance_ids",
    "first_attempt_at",
    "last_attempt_at",
    "body",
    "version",
)


def _when(epoch: float | None) -> datetime:
    return datetime.fromtimestamp(epoch or 0, UTC).replace(microsecond=0, tzinfo=None)


def row(
    message: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]], fmt: str, version: int
) -> tuple[Any, ...]:
    """One row for `message` (store.Store.message) and its alerts (store.Store.alerts_of)."""
    return (
        message["message_id"],
        message["endpoint"],
        fmt,
        message["status"],
        int(message["attempts"]),
        message["last_code"],
        str(message["last_response"] or "")[:500],
        [a["alert_id"] for a in alerts],
        [a["kind"] for a in alerts],
        [str(a["record"].get("lead_id") or "") for a in alerts],
        [a["instance_id"] for a in alerts],
        _when(message["first_at"]),
        _when(message["last_at"]),
        message["body"],
        version,
    )


def insert(backend: Backend, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write rows (idempotent: the same message and version collapse)."""
    if rows:
        backend.insert(TABLE, COLUMNS, rows)


def failed(backend: Backend, endpoint: str | None = None) -> list[dict[str, Any]]:
    """The latest row of every message not delivered (not `sent`), oldest first."""
    where = "WHERE status != 'sent'" + (" AND endpoint = %(endpoint)s" if endpoint else "")
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM (SELECT * FROM {TABLE} FINAL) {where} "
        "ORDER BY first_attempt_at, message_id"
    )
    rows = backend.execute(sql, {"endpoint": endpoint} if endpoint else None)
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]
