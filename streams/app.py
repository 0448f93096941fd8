"""The one faust.App of leadflow: its topics, tables and agents, built from worker settings.

Agents are thin: decode, call the core (streams.core.engine / identity), update the table, send.
All lead-keyed topics and tables share one partition count (checked at start-up), so a lead's
events, its state and the messages forwarded to it land on the same worker.
"""

from __future__ import annotations

import asyncio
import copyreg
import logging
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import faust
import orjson

from schemas.errors import LeadflowError
from schemas.registry import SchemaError
from schemas.serde import decode_event, encode_record
from streams import ordering, tansu, topics
from streams.core import engine, sla
from streams.core.definitions import Definitions
from streams.core.errors import InvalidEvent
from streams.core.events import MAX_EVENT_BYTES, Event, parse_event
from streams.core.identity import Message, apply_anonymous, is_anonymous_message, message_key
from streams.core.records import OutputKind, Record, Transition
from streams.deadlines import Deadlines

log = logging.getLogger("leadflow.worker")


def _read_only(mapping: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(mapping)


# Lead state holds read-only mappings; let pickle (the table codec) carry them.
copyreg.pickle(MappingProxyType, lambda m: (_read_only, (dict(m),)))

OUTPUT_TOPIC = {
    OutputKind.TRANSITION: topics.TRANSITIONS,
    OutputKind.SLA: topics.SLA,
    OutputKind.ATTRIBUTION: topics.ATTRIBUTION,
    OutputKind.LEAD_STATE: topics.LEAD_STATE,
}


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


class InFlight:
    """Messages this process forwarded through the internal topic and has not applied yet.

    In backfill (`--clock event`) the input agent waits for them before applying the next input
    event, so a stitch or merge lands before the lead's next event, as in replay (where forwards
    apply at once). Counted per process: with several workers a forward handled by another
    worker is not waited for (docs/streaming.md).
    """

    def __init__(self) -> None:
        self.count = 0
        self._drained = asyncio.Event()
        self._drained.set()

    def sent(self, n: int) -> None:
        """`n` messages went to the internal topic."""
        if n:
            self.count += n
            self._drained.clear()

    def applied(self) -> None:
        """One forwarded message was applied (after a restart, ones sent before it count too)."""
        self.count = max(0, self.count - 1)
        if self.count == 0:
            self._drained.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight (at most `timeout_s`); False on time-out."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Tick:
    """Fire a lead's SLA timers at `now` (sent by the timer through the internal topic)."""

    lead_id: str
    now: datetime


@dataclass(frozen=True, slots=True)
class CountMql:
    """Count one MQL of `team_id` at `at` in the weekly target tally (keyed `WEEKLY_KEY`)."""

    team_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CloseWeeks:
    """Report every week of the weekly target tally that ended by `now`."""

    now: datetime


# The weekly MQL tally is one small value for all teams (as in replay: every team's weeks open
# with the first MQL of any team); MQLs are a few percent of events, so one key is enough.
WEEKLY_KEY = b"weekly-mql-target"


def decode_input(value: bytes, fmt: str) -> Event:
    """Input bytes (framed Avro, or canonical JSON) → validated Event; InvalidEvent/SchemaError."""
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event: larger than {MAX_EVENT_BYTES} bytes")
    if fmt == "json" or value[:1] == b"{":
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidEvent("event: not valid JSON") from None
    else:
        obj = decode_event(value)
    return parse_event(obj)


def create_app(config: WorkerConfig, defs: Definitions) -> faust.App:
    """Build the Faust app with its topics, tables, agents and the SLA timer."""
    tansu.configure(config.fetch_max_wait_ms, config.bootstrap)
    name = lambda topic: config.topic_prefix + topic  # noqa: E731
    app: faust.App
    ordering.ArrivalOrder.configure(
        [name(t) for t in topics.INPUT_TOPICS],
        idle_ms=config.merge_idle_ms if config.clock == "event" else 0,
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
    outputs = {
        kind: app.topic(name(t), key_type=bytes, value_type=bytes)
        for kind, t in OUTPUT_TOPIC.items()
    }
    dlq_topic = app.topic(name(topics.DLQ), key_type=bytes, value_type=bytes)
    # values are pickled core state (bytes), keys the raw lead/anonymous id
    lead_to_state = app.Table(
        "lead_to_state", partitions=config.partitions, key_type=bytes, value_type=bytes
    )
    anonymous_to_touches = app.Table(
        "anonymous_to_touches", partitions=config.partitions, key_type=bytes, value_type=bytes
    )
    key_to_weekly_tally = app.Table(
        "key_to_weekly_tally", partitions=config.partitions, key_type=bytes, value_type=bytes
    )

    def load(table: Any, key: bytes) -> Any:
        raw = table.get(key)
        return None if raw is None else pickle.loads(raw)

    def store(table: Any, key: bytes, value: object) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = pickle.dumps(value)

    watermark = {"at": None}

    def send_outputs(records: tuple[Record, ...]) -> None:
        for record in records:
            key = (
                getattr(record, "lead_id", None) or getattr(record, "team_id", None) or ""
            ).encode()
            outputs[record.kind].send_soon(
                key=key, value=encode_record(str(record.kind), record.as_dict())
            )

    in_flight = InFlight()

    def forward(messages: tuple[Message, ...] | list[Any]) -> None:
        for message in messages:
            send_internal(message_key(message).encode(), message)

    deadlines = Deadlines()
    deadlines_loaded = {"done": False}

    week_end: dict[str, datetime | None] = {"at": None}  # when the earliest open week ends

    def load_deadlines() -> None:
        """After a (re)start: index the next deadline of every lead in the recovered table."""
        if deadlines_loaded["done"]:
            return
        deadlines_loaded["done"] = True
        for raw in list(lead_to_state.values()):
            state = pickle.loads(raw)
            deadlines.schedule(state.lead_id, engine.next_deadline(state, defs))
        tally = load(key_to_weekly_tally, WEEKLY_KEY)
        if tally is not None:
            week_end["at"] = sla.next_week_close(tally, defs)

    def send_internal(key: bytes, message: object) -> None:
        in_flight.sent(1)
        internal_topic.send_soon(key=key, value=pickle.dumps(message))

    def close_weeks(now: datetime) -> None:
        """Ask the tally to report the weeks that ended by `now` (once per crossing)."""
        if week_end["at"] is not None and week_end["at"] <= now:
            week_end["at"] = None  # known again once the tally has applied it
            send_internal(WEEKLY_KEY, CloseWeeks(now))

    def apply_weekly(message: CountMql | CloseWeeks) -> None:
        tally = load(key_to_weekly_tally, WEEKLY_KEY) or sla.EMPTY_TALLY
        if isinstance(message, CountMql):
            tally = sla.count_mql(tally, message.team_id, message.at, defs)
        else:
            tally, records = sla.close_weeks(tally, message.now, defs)
            send_outputs(records)
        store(key_to_weekly_tally, WEEKLY_KEY, tally)
        week_end["at"] = sla.next_week_close(tally, defs)

    def send_ticks(now: datetime) -> None:
        """A Tick through the internal topic (keyed by lead) for every lead due by `now`."""
        for lead_id in deadlines.pop_due(now):
            send_internal(lead_id.encode(), Tick(lead_id, now))

    def save_lead(key: bytes, before: Any, step: engine.Step) -> None:
        """Store the lead's new state; publish its lead-state record when it changed."""
        store(lead_to_state, key, step.state)
        send_outputs(step.outputs)
        for record in step.outputs:
            if (
                isinstance(record, Transition)
                and record.to_stage == "mql"
                and record.team_id in defs.teams
            ):
                send_internal(WEEKLY_KEY, CountMql(record.team_id, record.at))
        after = step.state
        if after is not None and (before is None or after.version != before.version):
            record = engine.snapshot(after, defs)
            if record is not None:
                send_outputs((record,))
        if after is not None and (after.sla or after.lead_id in deadlines):
            deadlines.schedule(after.lead_id, engine.next_deadline(after, defs))

    def apply(message: Message | Tick | CountMql | CloseWeeks) -> None:
        if isinstance(message, CountMql | CloseWeeks):
            apply_weekly(message)
            return
        if isinstance(message, Tick):
            key = message.lead_id.encode()
            state = load(lead_to_state, key)
            if state is not None:
                save_lead(key, state, engine.tick(state, message.now, defs))
            return
        key = message_key(message).encode()
        if is_anonymous_message(message):
            anon, forwards = apply_anonymous(load(anonymous_to_touches, key), message)
            store(anonymous_to_touches, key, anon)
            forward(list(forwards))
            return
        state = load(lead_to_state, key)
        step = engine.apply(state, message, defs)
        save_lead(key, state, step)
        forward(step.forwards)

    def advance(event: Event) -> None:
        if watermark["at"] is None or event.occurred_at > watermark["at"]:
            watermark["at"] = event.occurred_at

    @app.agent(input_topic)
    async def apply_input_events(stream: Any) -> None:
        async for event in stream.events():
            value = event.message.value or b""
            try:
                decoded = decode_input(value, config.input_format)
            except (InvalidEvent, SchemaError) as exc:
                await dlq_topic.send(
                    key=event.message.key,
                    value=value,
                    headers={
                        "reason": str(exc).encode(),
                        "error_class": exc.__class__.__name__.encode(),
                        "source_topic": event.message.topic.encode(),
                        "source_partition": str(event.message.partition).encode(),
                        "source_offset": str(event.message.offset).encode(),
                    },
                )
                continue
            if config.clock == "event" and in_flight.count:
                if not await in_flight.drained(timeout_s=5.0):
                    log.warning("forwarded messages not back within 5 s; applying on")
            advance(decoded)
            load_deadlines()
            try:
                apply(decoded)
                if config.clock == "event":  # as replay: the event, then what fell due
                    send_ticks(watermark["at"])
                    close_weeks(watermark["at"])
            except Exception as exc:  # noqa: BLE001 — one bad event must not stop the worker
                log.exception("event %s could not be applied", decoded.event_id)
                await dlq_topic.send(
                    key=event.message.key,
                    value=value,
                    headers={
                        "reason": f"not applied: {exc.__class__.__name__}: {exc}"[:500].encode(),
                        "error_class": exc.__class__.__name__.encode(),
                        "source_topic": event.message.topic.encode(),
                        "source_partition": str(event.message.partition).encode(),
                        "source_offset": str(event.message.offset).encode(),
                    },
                )

    @app.agent(internal_topic)
    async def apply_forwarded_messages(stream: Any) -> None:
        async for value in stream:
            apply(pickle.loads(value))
            in_flight.applied()

    @app.timer(config.tick_interval_s)
    async def fire_sla_timers() -> None:
        now = datetime.now(UTC) if config.clock == "live" else watermark["at"]
        if now is None:
            return
        load_deadlines()
        send_ticks(now)
        close_weeks(now)

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
