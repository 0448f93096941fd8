"""The one faust.App of leadflow: its topics, tables and agents, built from worker settings.

Agents are thin: each hands a batch of events to `streams.pipeline.Pipeline`, which calls the
core and decides what to send and store. All lead-keyed topics and tables share one partition
count (checked at start-up), so a lead's events, its state and the messages forwarded to it
land on the same worker.
"""

from __future__ import annotations

import copyreg
import logging
import weakref
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import faust
from faust.streams import _current_event

from schemas.errors import LeadflowError
from streams import ordering, tansu, topics
from streams.core.definitions import Definitions
from streams.core.sla import WeeklyMqlTally
from streams.core.state import AnonymousState, LeadState
from streams.pipeline import ANONYMOUS_TABLE, LEAD_TABLE, WEEKLY_TABLE, Pipeline, WeeklyState

log = logging.getLogger("leadflow.worker")


def _read_only(mapping: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(mapping)


# Lead state holds read-only mappings; let pickle (the table codec) carry them.
copyreg.pickle(MappingProxyType, lambda m: (_read_only, (dict(m),)))


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    obj = object.__new__(cls)
    for name, value in zip(_SLOTS[cls], values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


# Frozen slotted dataclasses pickle through dataclasses' Python-level __getstate__/__setstate__
# (a `fields()` call each way): ~11 % of the worker's time when profiled. Pickle them as a class
# and a tuple of values instead. (SlaInstance, a NamedTuple, pickles that way already.)
_SLOTS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))
    for cls in (LeadState, AnonymousState, WeeklyMqlTally, WeeklyState)
}
for _cls, _names in _SLOTS.items():
    copyreg.pickle(
        _cls,
        lambda obj, names=_names: (_rebuild, (type(obj), tuple(getattr(obj, n) for n in names))),
    )


class CoPartitioningError(LeadflowError):
    """Lead-keyed topics do not share one partition count."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker needs, built once from leadflow.settings.Settings by the front door."""

    bootstrap: str
    partitions: int = 4
    clock: Literal["live", "event"] = "live"
    input_format: Literal["avro", "json"] = "avro"
    store: str = "memory://"
    fetch_max_wait_ms: int = 20
    app_id: str = "leadflow"
    topic_prefix: str = ""
    tick_interval_s: float = 1.0
    data_dir: str = ".leadflow/worker"
    merge_idle_ms: int = 200  # backfill: how long a silent input partition may hold the others
    batch_size: int = 500  # events per batch handed to the pipeline
    batch_window_s: float = 0.01  # longest wait for a batch to fill
    exact_end_offsets: bool = True  # the Tansu recovery fix (streams/tansu.py); off: diagnostics


def write_in_partition_of(table: Any, key: bytes, value: bytes | None, event: Any) -> None:
    """`table[key] = value` (None: delete) with `event` as Faust's current event.

    A table writes its changelog to the partition of the current event; the pipeline writes
    after the batch's sends were acknowledged, outside each event's own iteration, so it names
    the event (whose partition is the key's: topics and tables are co-partitioned by lead).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    finally:
        _current_event.reset(token)


def create_app(config: WorkerConfig, defs: Definitions) -> faust.App:
    """Build the Faust app with its topics, tables, agents and the SLA timer."""
    tansu.configure(
        config.fetch_max_wait_ms, config.bootstrap if config.exact_end_offsets else None
    )
    name = lambda topic: config.topic_prefix + topic  # noqa: E731
    app: faust.App
    credit = ordering.InputCredit(limit=2000)
    ordering.ArrivalOrder.configure(
        [name(t) for t in topics.INPUT_TOPICS],
        idle_ms=config.merge_idle_ms if config.clock == "event" else 0,
        startup_ms=3000 if config.clock == "event" else 0,
        credit=credit,
        probe=lambda: (app.consumer_generation_id, app.consumer.assignment()),
    )
    app = faust.App(
        config.app_id,
        broker=f"leadflow://{config.bootstrap}",
        store=config.store,
        datadir=config.data_dir,
        topic_partitions=config.partitions,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        table_cleanup_interval=3600.0,
        processing_guarantee="at_least_once",
        ConsumerScheduler=ordering.ArrivalOrder,
    )
    input_topic = app.topic(
        *(name(t) for t in topics.INPUT_TOPICS), key_type=bytes, value_type=bytes
    )
    internal_topic = app.topic(
        name(topics.LEAD_EVENTS), key_type=bytes, value_type=bytes, partitions=config.partitions
    )
    # values are pickled core state (bytes), keys the raw lead / anonymous id
    tables = {
        table: app.Table(table, partitions=config.partitions, key_type=bytes, value_type=bytes)
        for table in (LEAD_TABLE, ANONYMOUS_TABLE, WEEKLY_TABLE)
    }

    async def send(
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]] | None,
        partition: int | None,
    ) -> Any:
        producer = await app.maybe_start_producer()
        return await producer.send(topic, key, value, partition, None, headers)

    async def flush() -> None:
        await app.producer.flush()

    input_names = {name(t) for t in topics.INPUT_TOPICS}

    async def committed_offsets() -> dict[tuple[str, int], int]:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in input_names]
        return await tansu.committed_offsets(config.bootstrap, config.app_id, assigned)

    def internal_partitions() -> set[int]:
        internal = internal_topic.get_topic_name()
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == internal}

    pipeline = Pipeline(
        defs,
        config.clock,
        config.input_format,
        name,
        tables,
        write_in_partition_of,
        send,
        flush,
        internal_partitions,
        committed_offsets,
    )

    @app.agent(input_topic)
    async def apply_input_events(stream: Any) -> None:
        async for events in stream.take_events(config.batch_size, config.batch_window_s):
            try:
                await pipeline.on_input(events)
            finally:
                credit.returned(len(events))

    @app.agent(internal_topic)
    async def apply_internal_messages(stream: Any) -> None:
        async for events in stream.take_events(config.batch_size, config.batch_window_s):
            await pipeline.on_internal(events)

    @app.timer(config.tick_interval_s)
    async def fire_sla_timers() -> None:
        now = datetime.now(UTC) if config.clock == "live" else pipeline.watermark
        await pipeline.on_timer(now)

    @app.task
    async def check_co_partitioning() -> None:
        await _check_partitions(
            app, config, [name(t) for t in (*topics.INPUT_TOPICS, *topics.INTERNAL_TOPICS)]
        )

    return app


async def _check_partitions(app: faust.App, config: WorkerConfig, names: list[str]) -> None:
    from aiokafka import AIOKafkaConsumer

    probe = AIOKafkaConsumer(bootstrap_servers=config.bootstrap)
    await probe.start()
    try:
        await probe.topics()
        counts = {n: len(probe.partitions_for_topic(n) or ()) for n in names}
    finally:
        await probe.stop()
    wrong = {n: c for n, c in counts.items() if c and c != config.partitions}
    if wrong:
        message = (
            f"lead-keyed topics must all have {config.partitions} partitions (LEADFLOW_PARTITIONS) "
            f"so a lead's events and state meet on one worker; found {wrong}"
        )
        log.error(message)
        await app.crash(CoPartitioningError(message))
