"""The one faust.App of leadflow: its topics, tables and tasks, built from worker settings.

Two thin tasks take batches of records from their inbox (`streams.bulk`: Faust's consumer hands
fetched records over in one step, not through agents and streams) and give them to
`streams.pipeline.Pipeline`, which calls the core and decides what to send and store. All
lead-keyed topics and tables share one partition count (checked at start-up), so a lead's
events, its state and the messages forwarded to it land on the same worker.
"""

from __future__ import annotations

import asyncio
import copyreg
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import faust
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

from schemas.errors import LeadflowError
from streams import bulk, dataloss, ordering, sending, tansu, topics
from streams.core.definitions import Definitions
from streams.core.sla import WeeklyMqlTally
from streams.core.state import AnonymousState, LeadState
from streams.pipeline import ANONYMOUS_TABLE, LEAD_TABLE, WEEKLY_TABLE, Pipeline, WeeklyState
from streams.sending import BatchSender

log = logging.getLogger("leadflow.worker")


def _read_only(mapping: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(mapping)


# Internal messages (pickled) hold events' read-only mappings; let pickle carry them.
copyreg.pickle(MappingProxyType, lambda m: (_read_only, (dict(m),)))


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    obj = object.__new__(cls)
    for name, value in zip(_SLOTS[cls], values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


# Frozen slotted dataclasses pickle through dataclasses' Python-level __getstate__/__setstate__
# (a `fields()` call each way). Internal messages (a merge carries state) and the weekly table
# value pickle them as a class and a tuple of values instead. (SlaInstance, a NamedTuple,
# pickles that way already.)
_SLOTS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))
    for cls in (LeadState, AnonymousState, WeeklyMqlTally, WeeklyState)
}
for _cls, _names in _SLOTS.items():
    copyreg.pickle(
        _cls,
        lambda obj, names=_names: (_rebuild, (type(obj), tuple(getattr(obj, n) for n in names))),
    )


# After SIGTERM/SIGINT the worker exits within this, whatever the broker does. Faust's own stop
# waits on the broker (commit, leave group, producer flush) with long timeouts; leaving at the
# deadline is what SIGKILL does, which the recovery tests show is safe: every output was
# acknowledged before its input was acked, and only acked input is ever committed.
STOP_DEADLINE_S = 8.0
EXIT_DATA_LOSS = 2


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner, with a bounded stop and a non-zero exit
    after broker data loss.

    At log levels WARN and above Faust installs a spinner that lowers the root logger to DEBUG,
    so every debug call in aiokafka builds a log record (~6 % of the worker's time profiled).
    """

    data_loss: str | None = None  # set (once) by the data-loss watch before it stops the worker

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if not self._signal_stop_time:
            timer = threading.Timer(STOP_DEADLINE_S, _exit_now)
            timer.daemon = True
            timer.start()
        super()._schedule_shutdown(signal)

    def execute_from_commandline(self) -> Any:
        try:
            super().execute_from_commandline()
        except SystemExit as exc:
            if Worker.data_loss is not None:
                raise SystemExit(EXIT_DATA_LOSS) from None
            raise exc


def _exit_now() -> None:
    print(
        f"leadflow worker: not stopped within {STOP_DEADLINE_S:.0f} s (broker unreachable?); "
        "exiting without further commits",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXIT_DATA_LOSS if Worker.data_loss is not None else 3)


def stop_for_data_loss(reason: str) -> None:
    """Broker data loss: count it, say it in one line, refuse every further send and stop the
    worker as SIGTERM does (exit code 2). Idempotent."""
    if Worker.data_loss is not None:
        return
    error = dataloss.report("the worker", reason)
    Worker.data_loss = str(error)
    sending.refuse(str(error))
    log.error("%s", error)
    os.kill(os.getpid(), signal.SIGTERM)


class CoPartitioningError(LeadflowError):
    """Lead-keyed topics do not share one partition count."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker needs, built once from leadflow.settings.Settings by the front door."""

    bootstrap: str
    partitions: int = 4
    clock: Literal["live", "event"] = "live"
    # each input topic's format, "avro" (Confluent framing) or "json"; unlisted: avro
    input_formats: Mapping[str, str] = field(default_factory=dict)
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
    data_loss_check_s: float = 2.0  # how often to look for broker data loss (streams/dataloss.py)
    # static group membership: a worker restarted with the same id takes its partitions back at
    # once instead of after the old session expires; unique per running worker (None: dynamic)
    instance_id: str | None = None


class FaustTableStore:
    """A Faust table as the pipeline's `TableStore`: Faust recovers it from its changelog; the
    pipeline writes that changelog itself, in batches (`streams.sending`), then the local store.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.changelog_topic: str = table.changelog_topic.get_topic_name()

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)  # type: ignore[no-any-return]

    def items(self) -> Any:
        return self.table.items()

    def values(self) -> Any:
        return self.table.values()

    def put(self, key: bytes, value: bytes | None, partition: int) -> None:
        store = self.table.data
        if isinstance(store, RocksDBStore):
            # Faust's RocksDB store picks a key's partition database from the current stream
            # event, and batches applied from an inbox have none: name the partition here.
            if value is None:
                store._del(key)
            else:
                store._key_index[key] = partition
                store._db_for_partition(partition).put(key, value)
        elif value is None:
            store.pop(key, None)
        else:
            store[key] = value

    def persisted(self, partition: int, offset: int) -> None:
        self.table.data.set_persisted_offset(TP(self.changelog_topic, partition), offset)


def _log_task_stacks() -> None:
    for task in asyncio.all_tasks():
        stack = io.StringIO()
        task.print_stack(file=stack)
        log.warning("task %s:\n%s", task.get_name(), stack.getvalue())


def _highwater(app: faust.App, tp: Any) -> int | None:
    """The end offset in the consumer's last fetch response for `tp` (None: not known)."""
    try:
        return app.consumer.highwater(tp)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 — not assigned (any more): not known
        return None


def create_app(config: WorkerConfig, defs: Definitions) -> faust.App:
    """Build the Faust app with its topics, tables, tasks and the SLA timer."""
    tansu.configure(
        config.fetch_max_wait_ms, config.bootstrap if config.exact_end_offsets else None
    )
    name = lambda topic: config.topic_prefix + topic  # noqa: E731
    app: faust.App
    ordering.ArrivalOrder.configure(
        [name(t) for t in topics.INPUT_TOPICS],
        idle_ms=config.merge_idle_ms if config.clock == "event" else 0,
        startup_ms=3000 if config.clock == "event" else 0,
        probe=lambda: (app.consumer_generation_id, app.consumer.assignment()),
        highwater=lambda tp: _highwater(app, tp),
        held_topics=[name(topics.LEAD_EVENTS)],
        ready=lambda: not app.rebalancing,
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
        consumer_group_instance_id=config.instance_id,
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,  # one batch per partition per pipeline batch
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        table_cleanup_interval=3600.0,
        processing_guarantee="at_least_once",
        ConsumerScheduler=ordering.ArrivalOrder,
        Worker=Worker,
    )
    input_topic = app.topic(
        *(name(t) for t in topics.INPUT_TOPICS), key_type=bytes, value_type=bytes
    )
    internal_topic = app.topic(
        name(topics.LEAD_EVENTS), key_type=bytes, value_type=bytes, partitions=config.partitions
    )
    # values are core state as streams.table_codec bytes, keys the raw lead / anonymous id
    tables = {
        table: app.Table(table, partitions=config.partitions, key_type=bytes, value_type=bytes)
        for table in (LEAD_TABLE, ANONYMOUS_TABLE, WEEKLY_TABLE)
    }

    async def kafka_producer() -> Any:
        # the aiokafka producer under Faust's: its batch API is not exposed by Faust
        return (await app.maybe_start_producer())._ensure_producer()

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
        config.input_formats,
        config.partitions,
        name,
        {name: FaustTableStore(table) for name, table in tables.items()},
        BatchSender(kafka_producer).send,
        internal_partitions,
        committed_offsets,
    )

    # The records of both topics reach the pipeline in batches straight from the fetch loop
    # (streams/bulk.py), not through Faust agents and streams.
    input_inbox, internal_inbox = bulk.Inbox(app), bulk.Inbox(app)
    input_inbox.route(input_topic)
    internal_inbox.route(internal_topic)

    @app.task
    async def apply_input_events() -> None:
        async for records in input_inbox.batches(config.batch_size, config.batch_window_s):
            await pipeline.on_input(records)

    @app.task
    async def apply_internal_messages() -> None:
        async for records in internal_inbox.batches(config.batch_size, config.batch_window_s):
            await pipeline.on_internal(records)

    @app.timer(config.tick_interval_s)
    async def fire_sla_timers() -> None:
        await pipeline.on_timer(datetime.now(UTC) if config.clock == "live" else None)

    @app.task
    async def dump_tasks_on_sigusr1() -> None:
        """`kill -USR1 <worker pid>` logs every asyncio task's stack: what a stalled worker
        waits for."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, _log_task_stacks)

    watched = {
        *(name(t) for t in (*topics.INPUT_TOPICS, *topics.OUTPUT_TOPICS, topics.DLQ)),
        internal_topic.get_topic_name(),
        *(table.changelog_topic.get_topic_name() for table in tables.values()),
    }
    detector = dataloss.DataLossDetector()
    probe = dataloss.BrokerProbe(config.bootstrap, config.app_id)

    @app.timer(config.data_loss_check_s)
    async def watch_for_broker_data_loss() -> None:
        """Stop when the broker lost our topics, our group's offsets or records (dataloss.py)."""
        existing = await probe.topics()
        assigned = [
            (tp.topic, tp.partition)
            for tp in app.consumer.assignment()
            if tp.topic in input_names or tp.topic == internal_topic.get_topic_name()
        ]
        committed = await probe.committed(assigned)
        highwater = {tp: _highwater(app, TP(*tp)) for tp in assigned}
        reason = detector.verdict(watched, existing, committed, highwater)
        if reason is not None:
            stop_for_data_loss(reason)

    sending.on_data_loss(stop_for_data_loss)

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
