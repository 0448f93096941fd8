"""The ClickHouse sink: output topics → batched inserts; offsets committed only after an insert.

A batch consumer (aiokafka `getmany`), not a per-event Faust agent: per-event iteration tops out
near 12k events/s here (INFRA.md). While ClickHouse is unreachable the sink retries the same
batch with exponential backoff and stops fetching, so memory stays bounded by one batch plus
the consumer's fetch buffer (backpressure); lead-state processing upstream is unaffected. Rows
ClickHouse refuses (bad values) go to `dead_letters` with the reason, one by one, so one bad row
never blocks a batch. Re-delivery after a crash is harmless: tables dedupe by key.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from clickhouse_driver.errors import ServerException, TypeMismatchError

from schemas.registry import SchemaError
from schemas.serde import decode_record
from sinks.clickhouse import tables
from sinks.clickhouse.backend import NETWORK_ERRORS, Backend
from sinks.clickhouse.rows import COLUMNS, MAPPERS
from sinks.clickhouse.writer import erase_leads
from streams import metrics, topics
from streams.core.records import record_id

log = logging.getLogger("leadflow.sink")

TABLE_OF_TOPIC = {
    topics.TRANSITIONS: tables.TRANSITIONS,
    topics.SLA: tables.SLA,
    topics.ATTRIBUTION: tables.ATTRIBUTION,
    topics.LEAD_STATE: tables.LEAD_STATE,
    topics.DLQ: tables.DEAD_LETTERS,
}
DATA_ERRORS = (
    ServerException,
    TypeMismatchError,
    TypeError,
    ValueError,
    struct.error,
    OverflowError,
    KeyError,
)


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """How the sink batches and retries."""

    batch_rows: int = 50_000
    linger_s: float = 1.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0


def _printable(raw: bytes) -> str:
    """Text as it is; binary (e.g. broken Avro) as `base64:…` so nothing is lost."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or any(ch < " " and ch not in "\t\n\r" for ch in text):
        return "base64:" + base64.b64encode(raw).decode()
    return text


def _dead_letter(
    reason: str, raw: bytes, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    return {
        "record_id": record_id("sink", topic, partition, offset),
        "reason": reason,
        "error_class": "SinkRejected",
        "raw": _printable(raw),
        "line": None,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "at": None,
    }


class ClickHouseSink:
    """Consumes output topics (topic name → table via `table_of_topic`) into ClickHouse."""

    def __init__(
        self,
        backend: Backend,
        consumer: AIOKafkaConsumer,
        table_of_topic: dict[str, str],
        config: SinkConfig = SinkConfig(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.consumer = consumer
        self.table_of_topic = table_of_topic
        self.config = config
        self.clock = clock
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._erased: set[str] = set()
        self.rows_written = 0

    def add(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        """Decode and map one Kafka record (a bad one becomes a dead-letter row)."""
        table = self.table_of_topic[topic]
        try:
            record = orjson.loads(value) if value[:1] == b"{" else decode_record(value)
            row = MAPPERS[table](record)
        except (SchemaError, orjson.JSONDecodeError, *DATA_ERRORS) as exc:
            reason = f"{table}: {exc.__class__.__name__}: {str(exc)[:200]}"
            self._pending.append(
                (
                    tables.DEAD_LETTERS,
                    MAPPERS[tables.DEAD_LETTERS](
                        _dead_letter(reason, value, topic, partition, offset)
                    ),
                )
            )
            metrics.SINK_REJECTED.labels(table).inc()
            return
        self._pending.append((table, row))
        if table == tables.LEAD_STATE and record.get("erased"):
            self._erased.add(str(record["lead_id"]))

    async def flush(self) -> int:
        """Insert everything pending, retrying while ClickHouse is unreachable; returns rows."""
        if not self._pending and not self._erased:
            return 0
        delay = self.config.retry_initial_s
        while True:
            try:
                started = self.clock()
                written = await asyncio.to_thread(self._insert)
                metrics.SINK_FLUSH_SECONDS.observe(self.clock() - started)
                metrics.SINK_CLICKHOUSE_UP.set(1)
                break
            except NETWORK_ERRORS as exc:
                metrics.SINK_RETRIES.inc()
                metrics.SINK_CLICKHOUSE_UP.set(0)
                log.warning(
                    "ClickHouse unreachable (%s); holding %d rows, retrying in %.1f s",
                    exc.__class__.__name__,
                    len(self._pending),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
        self._pending = []
        self._erased = set()
        metrics.SINK_BUFFERED.set(0)
        self.rows_written += written
        return written

    def _insert(self) -> int:
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        for table, row in self._pending:
            by_table.setdefault(table, []).append(row)
        written = 0
        for table, rows in by_table.items():
            try:
                self.backend.insert(table, COLUMNS[table], rows)
                written += len(rows)
            except DATA_ERRORS:
                written += self._insert_one_by_one(table, rows)
            metrics.SINK_ROWS.labels(table).inc(len(rows))
        if self._erased:
            erase_leads(self.backend, sorted(self._erased))
        return written

    def _insert_one_by_one(self, table: str, rows: list[tuple[Any, ...]]) -> int:
        written = 0
        for row in rows:
            try:
                self.backend.insert(table, COLUMNS[table], [row])
                written += 1
            except DATA_ERRORS as exc:
                metrics.SINK_REJECTED.labels(table).inc()
                reason = f"{table}: ClickHouse refused the row: {str(exc).splitlines()[0][:200]}"
                raw = orjson.dumps(dict(zip(COLUMNS[table], row, strict=True)), default=str)
                letter = _dead_letter(reason, raw, table, -1, 0)
                letter["record_id"] = record_id("rejected", table, raw)
                self.backend.insert(
                    tables.DEAD_LETTERS,
                    COLUMNS[tables.DEAD_LETTERS],
                    [MAPPERS[tables.DEAD_LETTERS](letter)],
                )
        return written

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, buffer, flush by size or time, commit after each successful flush."""
        last_flush = self.clock()
        while not stop.is_set():
            room = max(1, self.config.batch_rows - len(self._pending))
            batch = await self.consumer.getmany(timeout_ms=200, max_records=room)
            for partition, records in batch.items():
                for record in records:
                    self.add(
                        partition.topic, partition.partition, record.offset, record.value or b""
                    )
            metrics.SINK_BUFFERED.set(len(self._pending))
            due = self.clock() - last_flush >= self.config.linger_s
            caught_up = not batch  # nothing more to fetch: waiting longer only adds latency
            if len(self._pending) >= self.config.batch_rows or (
                (due or caught_up) and self._pending
            ):
                await self.flush()
                await self.consumer.commit()
                last_flush = self.clock()
            elif due:
                last_flush = self.clock()
        await self.flush()
        await self.consumer.commit()


def make_consumer(bootstrap: str, topic_names: list[str], group_id: str) -> AIOKafkaConsumer:
    """A batch consumer with the settings that join a group in seconds on Tansu (INFRA.md)."""
    return AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
        max_poll_interval_ms=24 * 3600 * 1000,  # a long ClickHouse outage must not evict us
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
