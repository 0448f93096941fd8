"""The ClickHouse sink: output topics → batched inserts; offsets committed only after an insert.

A batch consumer (aiokafka `getmany`), not a per-event Faust agent: per-event iteration tops out
near 12k events/s here (INFRA.md). While ClickHouse is unreachable the sink retries the same
batch with exponential backoff and stops fetching, so memory stays bounded by one batch plus
the consumer's fetch buffer (backpressure); lead-state processing upstream is unaffected.

It never dies on data: a record it cannot decode or map, and a row ClickHouse refuses or the
client cannot even serialise (a None in a String column, a wrong type: AttributeError,
TypeError, struct.error, ...), becomes a `dead_letters` row with the reason, one by one, and the
rest of the batch goes on. Records of the dead-letter topic are never parsed: their row is the
worker's headers (reason, error class, source topic/partition/offset) plus the original bytes
(rows.dlq_row). Re-delivery after a crash is harmless: tables dedupe by key.

It stops cleanly: on a stop it inserts what it holds if ClickHouse answers within
`stop_flush_s`, commits only what was inserted, and never waits on an unreachable broker or
server for longer than a few seconds. It stops with `BrokerDataLoss` when the broker lost
the topics or offsets it reads (streams/dataloss.py), committing nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas.serde import decode_record
from sinks.clickhouse import tables
from sinks.clickhouse.backend import Backend, is_transient
from sinks.clickhouse.rows import COLUMNS, MAPPERS, dead_letter_row, dlq_row
from sinks.clickhouse.writer import erase_leads
from streams import metrics, topics
from streams.core.records import record_id
from streams.dataloss import BrokerProbe, DataLossDetector, report

log = logging.getLogger("leadflow.sink")

T = TypeVar("T")

TABLE_OF_TOPIC = {
    topics.TRANSITIONS: tables.TRANSITIONS,
    topics.SLA: tables.SLA,
    topics.ATTRIBUTION: tables.ATTRIBUTION,
    topics.LEAD_STATE: tables.LEAD_STATE,
    topics.DLQ: tables.DEAD_LETTERS,
}


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """How the sink batches, retries, watches the broker and stops."""

    batch_rows: int = 50_000
    linger_s: float = 1.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    stop_flush_s: float = 2.5  # after a stop: how long to keep trying to insert what is held
    commit_timeout_s: float = 2.5  # a commit the broker does not answer is given up (re-delivery)
    check_interval_s: float = 2.0  # how often to look for broker data loss (0: never)


_Source = tuple[str, int, int, bytes]


class _GaveUp(Exception):
    """Stopping while ClickHouse did not take the rows: they are not committed."""


def _sink_letter(
    reason: str, raw: bytes, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    return {
        "record_id": record_id("sink", topic, partition, offset),
        "reason": reason,
        "error_class": "SinkRejected",
        "raw": raw,
        "line": None,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "at": None,
    }


def _why(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0]
    return f"{exc.__class__.__name__}: {first[:300]}"


class ClickHouseSink:
    """Consumes output topics (topic name → table via `table_of_topic`) into ClickHouse."""

    def __init__(
        self,
        backend: Backend,
        consumer: AIOKafkaConsumer,
        table_of_topic: dict[str, str],
        config: SinkConfig = SinkConfig(),
        clock: Callable[[], float] = time.monotonic,
        probe: BrokerProbe | None = None,
    ) -> None:
        self.backend = backend
        self.consumer = consumer
        self.table_of_topic = table_of_topic
        self.config = config
        self.clock = clock
        self.probe = probe
        self._detector = DataLossDetector()
        # (table, row, where it came from: topic, partition, offset, original bytes)
        self._pending: list[tuple[str, tuple[Any, ...], _Source]] = []
        self._erased: set[str] = set()
        self._stop_seen_at: float | None = None
        self.rows_written = 0
        self.rows_rejected = 0

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes,
        headers: Iterable[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> None:
        """Decode and map one Kafka record (one that cannot be becomes a dead-letter row)."""
        table = self.table_of_topic[topic]
        source = (topic, partition, offset, value)
        if table == tables.DEAD_LETTERS:
            row = dlq_row(headers, value, topic, partition, offset, timestamp_ms)
            self._pending.append((tables.DEAD_LETTERS, row, source))
            return
        try:
            record = orjson.loads(value) if value[:1] == b"{" else decode_record(value)
            row = MAPPERS[table](record)
            erased = table == tables.LEAD_STATE and bool(record.get("erased"))
        except Exception as exc:  # noqa: BLE001 — the sink never dies on data
            reason = f"{table}: could not decode or map the record: {_why(exc)}"
            letter = _sink_letter(reason, value, topic, partition, offset)
            self._pending.append((tables.DEAD_LETTERS, dead_letter_row(letter), source))
            metrics.SINK_REJECTED.labels(table).inc()
            self.rows_rejected += 1
            return
        self._pending.append((table, row, source))
        if erased:
            self._erased.add(str(record["lead_id"]))

    async def flush(self, stop: asyncio.Event | None = None) -> int | None:
        """Insert everything pending, retrying while ClickHouse is unreachable; returns rows
        written, or None when `stop` was set and ClickHouse did not take the rows within
        `stop_flush_s` (they stay pending and must not be committed)."""
        if not self._pending and not self._erased:
            return 0
        delay = self.config.retry_initial_s
        while True:
            try:
                started = self.clock()
                written = await self._until_stopped(self._in_thread(self._insert), stop)
                metrics.SINK_FLUSH_SECONDS.observe(self.clock() - started)
                metrics.SINK_CLICKHOUSE_UP.set(1)
                break
            except _GaveUp:
                log.warning(
                    "stopping: ClickHouse did not take %d held rows; not committed, they are "
                    "read again after a restart",
                    len(self._pending),
                )
                return None
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.SINK_RETRIES.inc()
                metrics.SINK_CLICKHOUSE_UP.set(0)
                log.warning(
                    "ClickHouse unreachable (%s); holding %d rows, retrying in %.1f s",
                    _why(exc),
                    len(self._pending),
                    delay,
                )
                try:
                    await self._until_stopped(asyncio.sleep(delay), stop)
                except _GaveUp:
                    log.warning(
                        "stopping: ClickHouse unreachable, %d held rows not written and not "
                        "committed; they are read again after a restart",
                        len(self._pending),
                    )
                    return None
                delay = min(delay * 2, self.config.retry_max_s)
        self._pending = []
        self._erased = set()
        metrics.SINK_BUFFERED.set(0)
        self.rows_written += written
        return written

    async def _until_stopped(self, work: Any, stop: asyncio.Event | None) -> Any:
        """Await `work`, unless `stop` has been set for longer than `stop_flush_s` first
        (then _GaveUp; a thread still inserting is left to finish on its own)."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.1 if stop is not None else None)
            if task in done:
                return task.result()
            assert stop is not None
            if stop.is_set():
                if self._stop_seen_at is None:
                    self._stop_seen_at = self.clock()
                if self.clock() - self._stop_seen_at >= self.config.stop_flush_s:
                    task.cancel()
                    raise _GaveUp

    @staticmethod
    async def _in_thread(work: Callable[[], T]) -> T:
        """`work()` in a daemon thread: a hung ClickHouse connection cannot hold the process at
        exit (the default executor's threads are joined by asyncio.run)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        def target() -> None:
            try:
                result, exc = work(), None
            except BaseException as error:  # noqa: BLE001 — handed to the awaiting task
                result, exc = None, error
            try:
                loop.call_soon_threadsafe(settle, result, exc)
            except RuntimeError:
                pass  # the loop is gone: nobody waits any more

        threading.Thread(target=target, name="clickhouse-insert", daemon=True).start()
        return await future

    def _insert(self) -> int:
        by_table: dict[str, list[tuple[tuple[Any, ...], _Source]]] = {}
        for table, row, source in self._pending:
            by_table.setdefault(table, []).append((row, source))
        written = 0
        for table, rows in by_table.items():
            try:
                self.backend.insert(table, COLUMNS[table], [row for row, _ in rows])
                written += len(rows)
            except Exception as exc:  # noqa: BLE001 — refused or unserialisable: row by row
                if is_transient(exc):
                    raise
                written += self._insert_one_by_one(table, rows)
            metrics.SINK_ROWS.labels(table).inc(len(rows))
        if self._erased:
            erase_leads(self.backend, sorted(self._erased))
        return written

    def _insert_one_by_one(self, table: str, rows: list[tuple[tuple[Any, ...], _Source]]) -> int:
        """Each row alone; one ClickHouse or the client refuses becomes a dead letter (located
        at its Kafka record, with that record's bytes)."""
        written = 0
        for row, (topic, partition, offset, value) in rows:
            try:
                self.backend.insert(table, COLUMNS[table], [row])
                written += 1
                continue
            except Exception as exc:  # noqa: BLE001 — the sink never dies on data
                if is_transient(exc):
                    raise
                problem = exc
            metrics.SINK_REJECTED.labels(table).inc()
            self.rows_rejected += 1
            reason = f"{table}: the row was refused: {_why(problem)}"
            letter = _sink_letter(reason, value, topic, partition, offset)
            if table == tables.DEAD_LETTERS:  # a dead letter refused: keep its own story
                letter["record_id"] = record_id("refused", topic, partition, offset)
                letter["source_topic"], letter["source_partition"] = row[5], row[6]
                letter["source_offset"] = row[7]
                letter["reason"] = f"{reason} (first refused as: {row[1]})"
            try:
                self.backend.insert(
                    tables.DEAD_LETTERS, COLUMNS[tables.DEAD_LETTERS], [dead_letter_row(letter)]
                )
                written += 1
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    raise
                log.error("a dead-letter row was refused too, dropped: %s (%s)", _why(exc), reason)
        return written

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, buffer, flush by size or time, commit after each successful flush; look for
        broker data loss every `check_interval_s` (BrokerDataLoss: stop, commit nothing more)."""
        last_flush = last_check = self.clock()
        while not stop.is_set():
            if self.probe is not None and self.clock() - last_check >= self.config.check_interval_s:
                await self.check_broker()
                last_check = self.clock()
            room = max(1, self.config.batch_rows - len(self._pending))
            batch = await self.consumer.getmany(timeout_ms=200, max_records=room)
            for partition, records in batch.items():
                for record in records:
                    self.add(
                        partition.topic,
                        partition.partition,
                        record.offset,
                        record.value or b"",
                        record.headers or (),
                        record.timestamp,
                    )
            metrics.SINK_BUFFERED.set(len(self._pending))
            due = self.clock() - last_flush >= self.config.linger_s
            caught_up = not batch  # nothing more to fetch: waiting longer only adds latency
            if len(self._pending) >= self.config.batch_rows or (
                (due or caught_up) and self._pending
            ):
                if await self.flush(stop) is None:
                    return
                await self.commit()
                last_flush = self.clock()
            elif due:
                last_flush = self.clock()
        if await self.flush(stop) is not None:
            try:  # the whole last commit, data-loss check included, within one bound
                await asyncio.wait_for(self.commit(), self.config.commit_timeout_s)
            except TimeoutError:
                log.warning("stopping: the broker did not take the last commit in time")

    async def commit(self) -> None:
        """Commit the consumed positions (everything consumed is inserted by now); a broker
        that does not answer within `commit_timeout_s` costs a re-delivery, not a hang."""
        positions: dict[tuple[str, int], int] = {}
        for tp in self.consumer.assignment():
            try:
                positions[(tp.topic, tp.partition)] = await asyncio.wait_for(
                    self.consumer.position(tp), self.config.commit_timeout_s
                )
            except Exception:  # noqa: BLE001 — no position: nothing to commit there
                continue
        if not positions:
            return
        if self.probe is not None:
            await self.check_broker()  # never commit into a broker that lost our offsets
        offsets = {TopicPartition(t, p): o for (t, p), o in positions.items()}
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), self.config.commit_timeout_s)
        except Exception as exc:  # noqa: BLE001 — at-least-once: read again later, deduped
            log.warning("commit not done (%s); those records will be read again", _why(exc))
            return
        self._detector.committed_by_us(positions)

    async def check_broker(self) -> None:
        """BrokerDataLoss when the broker lost the sink's topics, its group's offsets or records."""
        assert self.probe is not None
        assigned = [(tp.topic, tp.partition) for tp in self.consumer.assignment()]
        existing = await self.probe.topics()
        committed = await self.probe.committed(assigned)
        highwater = {}
        for tp in self.consumer.assignment():
            highwater[(tp.topic, tp.partition)] = self.consumer.highwater(tp)
        reason = self._detector.verdict(self.table_of_topic, existing, committed, highwater)
        if reason is not None:
            raise report("the sink", reason)


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
