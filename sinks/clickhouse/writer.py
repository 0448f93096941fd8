"""Batching writer: buffers rows per table in `add()`, inserts in `flush()`; erasure of leads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from sinks.clickhouse import tables
from sinks.clickhouse.backend import Backend
from sinks.clickhouse.rows import COLUMNS, MAPPERS

REPLAY_FILES = {
    "transitions.jsonl": tables.TRANSITIONS,
    "sla.jsonl": tables.SLA,
    "attribution.jsonl": tables.ATTRIBUTION,
    "lead_states.jsonl": tables.LEAD_STATE,
    "dead_letters.jsonl": tables.DEAD_LETTERS,
}


class BatchWriter:
    """Buffers mapped rows per table; `flush()` inserts every non-empty buffer.

    Buffers are cleared in `finally`, so a failed flush is the caller's to retry with the
    same records (inserts are idempotent by key: ReplacingMergeTree + FINAL in queries).
    """

    def __init__(self, backend: Backend, batch_rows: int = 50_000) -> None:
        self.backend = backend
        self.batch_rows = batch_rows
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        self._erased: set[str] = set()
        self.pending = 0

    def add(self, table: str, record: Mapping[str, Any]) -> None:
        """Buffer one record for `table` (mapped to its row now, so bad data fails early)."""
        self._rows.setdefault(table, []).append(MAPPERS[table](record))
        self.pending += 1
        if table == tables.LEAD_STATE and record.get("erased"):
            self._erased.add(str(record["lead_id"]))

    def flush(self) -> int:
        """Insert everything buffered; returns rows written. Erasures run after the inserts."""
        written = 0
        try:
            for table, rows in self._rows.items():
                if rows:
                    self.backend.insert(table, COLUMNS[table], rows)
                    written += len(rows)
            if self._erased:
                erase_leads(self.backend, sorted(self._erased))
        finally:
            self._rows = {}
            self._erased = set()
            self.pending = 0
        return written


def erase_leads(backend: Backend, lead_ids: Iterable[str]) -> None:
    """Delete the leads' rows from every table holding personal data (ClickHouse mutations)."""
    ids = tuple(lead_ids)
    if not ids:
        return
    for table in tables.PERSONAL_DATA_TABLES:
        backend.execute(f"ALTER TABLE {table} DELETE WHERE lead_id IN %(ids)s", {"ids": ids})


def load_replay_output(
    backend: Backend, output_dir: Path, events_file: Path | None = None
) -> dict[str, int]:
    """Load a `leadflow replay` output directory (and optionally its input events) into the tables."""
    from streams.core.errors import InvalidEvent
    from streams.core.events import event_to_json, parse_event

    writer = BatchWriter(backend)
    counts: dict[str, int] = {}
    if events_file is not None:
        with open(events_file, "rb") as source:
            for raw in source:
                try:
                    event = event_to_json(parse_event(orjson.loads(raw)))
                except (InvalidEvent, orjson.JSONDecodeError):
                    continue
                if event.get("lead_id"):
                    writer.add(tables.EVENTS, event)
                    counts[tables.EVENTS] = counts.get(tables.EVENTS, 0) + 1
                if writer.pending >= writer.batch_rows:
                    writer.flush()
        writer.flush()
    for name, table in REPLAY_FILES.items():
        path = output_dir / name
        if not path.exists():
            continue
        with open(path, "rb") as source:
            for raw in source:
                writer.add(table, orjson.loads(raw))
                counts[table] = counts.get(table, 0) + 1
                if writer.pending >= writer.batch_rows:
                    writer.flush()
        writer.flush()
    return counts
