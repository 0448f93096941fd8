"""The worker's driver of the core: batches of Kafka events in, outputs out, then state.

`Pipeline` is to the worker's tasks what `streams.replay.Replayer` is to a file: it decodes,
applies messages with `streams.core.engine` / `identity`, keeps the SLA deadline index and the
weekly MQL tally, and decides what to send. It works a batch at a time:

1. apply every event of the batch against an overlay of the tables (reads see earlier writes);
2. send the outputs, dead letters and internal messages, and wait until the broker has them;
3. only then write the new states to the tables' changelogs, wait for those too, and then
   to the tables' local stores.

Both sends go out as one Kafka batch per topic partition (`streams.sending`): the pipeline
writes table changelogs itself instead of through Faust's one-send-per-key table API.

So a crash can lose state writes but never outputs whose state survived: after a restart the
events after the last commit are applied again and give the same records with the same ids
(duplicates only as exact re-deliveries, never gaps).

SLA timers fire in the batch itself: the deadline index holds the leads this process owns. The
clock is the wall clock (`--clock live`, from a timer) or, in backfill (`--clock event`),
replay's event-time clock, which `leadflow produce` stamps on each record (`leadflow-clock`:
the largest occurred_at before it); timers due by it fire before the record is applied, and
those due by its own time after, as replay does between lines.

A message to another key (a forward: stitching, a merge; an MQL count for the weekly tally) is
applied in the same batch, right after the step that sent it and in the order sent, when this
process owns the key's partition, exactly as replay applies forwards; only messages to keys
another worker owns go through the internal topic (not waited for).

After a (re)start or a rebalance, internal messages an earlier process sent may still be
waiting in the internal topic. Every internal message names its root cause, the input record
(topic, partition, offset) whose processing led to it. A backlog message whose cause is at or
after the group's committed offset belongs to an input that is about to be applied again: it
is parked, and sent again right after that input is re-applied, so it lands in the order it
first had (a cause applied before its consequences). Others are applied at once. Before
applying input, the pipeline appends a `Fence` to each internal partition it was newly given
and waits until it has read up to them: the whole backlog is then applied or parked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pickle
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import orjson

from schemas.registry import SchemaError
from schemas.serde import decode_event, encode_record
from streams import metrics, table_codec, topics
from streams.core import engine, sla
from streams.core.definitions import Definitions
from streams.core.errors import InvalidEvent
from streams.core.events import MAX_EVENT_BYTES, Event, parse_event
from streams.core.identity import Message, apply_anonymous, is_anonymous_message, message_key
from streams.core.records import OutputKind, Record, Transition
from streams.core.state import LeadState
from streams.deadlines import Deadlines
from streams.sending import Outgoing, key_partition

log = logging.getLogger("leadflow.worker")

OUTPUT_TOPIC = {
    OutputKind.TRANSITION: topics.TRANSITIONS,
    OutputKind.SLA: topics.SLA,
    OutputKind.ATTRIBUTION: topics.ATTRIBUTION,
    OutputKind.LEAD_STATE: topics.LEAD_STATE,
}
# The weekly MQL tally is one small value for all teams (as in replay, every team's weeks open
# with the first MQL of any team); MQLs are a few percent of events, so one key is enough.
WEEKLY_KEY = b"weekly-mql-target"
LEAD_TABLE, ANONYMOUS_TABLE, WEEKLY_TABLE = (
    "lead_to_state",
    "anonymous_to_touches",
    "key_to_weekly_tally",
)


@dataclass(frozen=True, slots=True)
class Tick:
    """Fire a lead's SLA timers at `now`."""

    lead_id: str
    now: datetime


@dataclass(frozen=True, slots=True)
class CountMql:
    """Count one MQL transition (`record_id`, once) of `team_id` at `at` in the weekly tally;
    `delta` −1 takes back a retracted one."""

    record_id: str
    team_id: str
    at: datetime
    delta: int = 1


@dataclass(frozen=True, slots=True)
class CloseWeeks:
    """Report every week of the weekly tally that ended by `now`."""

    now: datetime


@dataclass(frozen=True, slots=True)
class Fence:
    """Marks the end of an internal partition's backlog (see the module docstring)."""

    token: str


@dataclass(frozen=True, slots=True)
class WeeklyState:
    """The weekly tally plus the MQL transitions counted in its open weeks, as (record_id, at):
    a re-delivered count is applied once."""

    tally: sla.WeeklyMqlTally = sla.EMPTY_TALLY
    counted: frozenset[tuple[str, datetime]] = frozenset()


Internal = Message | Tick | CountMql | CloseWeeks | Fence
Cause = tuple[str, int, int]  # the root input record: topic, partition, offset


class KafkaMessage(Protocol):
    """What the pipeline reads of a consumed Kafka record (a Faust `Message`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


SendAll = Callable[[Sequence[Outgoing]], Awaitable[dict[tuple[str, int], int]]]


class TableStore(Protocol):
    """What the pipeline needs of a Faust table (values are `streams.table_codec` bytes)."""

    changelog_topic: str

    def get(self, key: bytes) -> bytes | None: ...

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...

    def values(self) -> Iterator[bytes]: ...

    def put(self, key: bytes, value: bytes | None, partition: int) -> None:
        """Set (None: delete) the value of `key` (of changelog `partition`) in the local store
        only; the changelog is written."""

    def persisted(self, partition: int, offset: int) -> None:
        """The changelog holds everything up to `offset` of `partition` (durable stores)."""


_MISSING = object()
_DECODED_MAX = 500_000  # decoded values kept; all dropped at once beyond (bounds memory)


@dataclass
class _Batch:
    """What one batch changes: table writes (by table and key), and what to send."""

    # (table, key) → (changelog partition, new value or None)
    writes: dict[tuple[str, bytes], tuple[int, object]] = field(default_factory=dict)
    sends: list[Outgoing] = field(default_factory=list)
    changed: dict[bytes, LeadState] = field(default_factory=dict)  # lead key → latest state
    # messages to keys of partitions this process owns, applied in this batch, first in first
    local: deque[tuple[Internal, int]] = field(default_factory=deque)


def table_digest(items: Iterable[tuple[bytes, bytes | None]]) -> str:
    """`N keys, digest D` of a table's (key, value) pairs, order-independent (None: deleted)."""
    pairs = sorted((key, value) for key, value in items if value is not None)
    digest = hashlib.blake2b(digest_size=8)
    for key, value in pairs:
        digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return f"{len(pairs)} keys, digest {digest.hexdigest()}"


def decode_input(value: bytes, fmt: str) -> Event:
    """Input bytes in the topic's format, "avro" (Confluent framing) or "json" → validated Event;
    InvalidEvent/SchemaError."""
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event: larger than {MAX_EVENT_BYTES} bytes")
    if fmt == "json":
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidEvent("event: not valid JSON") from None
    else:
        obj = decode_event(value)
    return parse_event(obj)


class Pipeline:
    """Applies batches of input events and of internal messages; see the module docstring.

    `tables` maps table name → its `TableStore`; `send_all(records)` sends records (in order
    per partition) and returns once the broker has acknowledged them all, with the last offset
    written per (topic, partition); `internal_partitions()` says which internal-topic
    partitions this process is assigned now.
    """

    def __init__(
        self,
        defs: Definitions,
        clock: Literal["live", "event"],
        input_formats: Mapping[str, str],
        partitions: int,
        topic_name: Callable[[str], str],
        tables: dict[str, TableStore],
        send_all: SendAll,
        internal_partitions: Callable[[], set[int]],
        committed_offsets: Callable[[], Awaitable[dict[tuple[str, int], int]]],
    ) -> None:
        self.defs = defs
        self.clock = clock
        # "avro" or "json" by the (prefixed) name of each input topic; unlisted: avro
        self._formats = {topic_name(topic): fmt for topic, fmt in input_formats.items()}
        self._partitions = partitions
        self._name = topic_name
        self._tables = tables
        self._send_all = send_all
        # internal messages carry the sending process's id (a restart is another process)
        self.incarnation = uuid.uuid4().hex
        self._internal_partitions = internal_partitions
        self._fenced: set[int] = set()
        self._fences: set[str] = set()
        self._fences_applied = asyncio.Event()
        self._committed_offsets = committed_offsets
        self._redelivered_from: dict[tuple[str, int], int] = {}
        self._redelivered_for: frozenset[int] | None = None  # the assignment it was read for
        self._restart_point = asyncio.Lock()
        self._parked: dict[Cause, list[tuple[bytes, Internal]]] = {}
        # per input partition, the last offset this process applied (its own inputs' replies
        # from another worker are applied at once, never parked)
        self._applied: dict[tuple[str, int], int] = {}
        self._cause: Cause | None = None
        self._source: KafkaMessage | None = None  # the record being applied (dead letters)
        # decoded table values of our keys (we are their only writer while assigned)
        self._decoded: dict[tuple[str, bytes], Any] = {}
        self._assignment: frozenset[int] = frozenset()
        self._recovery_logged = False
        self.watermark: datetime | None = None
        self._deadlines = Deadlines()
        self._deadlines_loaded = False
        self._week_end: datetime | None = None

    # --- the worker's tasks call these -----------------------------------------------------

    async def on_input(self, messages: Sequence[KafkaMessage]) -> None:
        """Apply a batch from the input topics (dead-lettering what cannot be applied)."""
        await self._take_assignment()
        started = time.perf_counter()
        batch = _Batch()
        dead_letters = 0
        for message in messages:
            try:
                decoded = decode_input(
                    message.value or b"", self._formats.get(message.topic, "avro")
                )
            except (InvalidEvent, SchemaError) as exc:
                self._dead_letter(batch, message, str(exc), exc)
                dead_letters += 1
                continue
            if self.clock == "event":
                before = topics.producer_clock(message.headers)
                if before is not None:  # replay's clock before this line (rewinds on takeover)
                    self.watermark = before
                    self._cause = None  # due by the clock alone: nothing to wait for on restart
                    self._fire_due(batch)
            if self.watermark is None or decoded.occurred_at > self.watermark:
                self.watermark = decoded.occurred_at
            self._cause = (message.topic, message.partition, message.offset)
            self._applied[(message.topic, message.partition)] = message.offset
            self._source = message
            try:
                self._apply(decoded, message.partition, batch)
            except Exception as exc:  # noqa: BLE001 — one bad event must not stop the worker
                log.exception("event %s could not be applied", decoded.event_id)
                self._dead_letter(batch, message, f"not applied: {type(exc).__name__}: {exc}", exc)
                dead_letters += 1
                batch.local.clear()  # what it forwarded before failing goes with it
                continue
            for key, parked in self._parked.pop(self._cause, ()):
                self._internal(key, parked, batch)  # its cause is applied again: now it may go
            self._apply_local(batch)
            if self.clock == "event":  # as replay: the event, then what fell due by its time
                self._fire_due(batch)
        await self._flush(batch)
        metrics.WORKER_INPUT.labels("applied").inc(len(messages) - dead_letters)
        if dead_letters:
            metrics.WORKER_INPUT.labels("dead_letter").inc(dead_letters)
        metrics.WORKER_BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.WORKER_SLA_DEADLINES.set(len(self._deadlines))

    def _fire_due(self, batch: _Batch) -> None:
        """Backfill: tick what fell due by the watermark and close ended weeks, as replay does
        between lines."""
        assert self.watermark is not None
        self._tick_due(self.watermark, batch)
        self._close_weeks(self.watermark, batch)
        self._apply_local(batch)

    async def on_internal(self, records: Sequence[KafkaMessage]) -> None:
        """Apply a batch from the internal topic (forwards, ticks, weekly tally messages)."""
        self._log_recovered_tables()
        redelivered_from = await self._load_restart_point()
        self._watch_assignment()
        batch = _Batch()
        fences = []
        for record in records:
            sender, cause, message = pickle.loads(record.value or b"")
            if isinstance(message, Fence):
                fences.append(message.token)
                continue
            if (
                sender != self.incarnation
                and cause is not None
                and self._reapplies(cause, redelivered_from)
            ):
                self._parked.setdefault(cause, []).append((record.key or b"", message))
                continue
            self._cause = cause
            self._source = record
            try:
                self._apply(message, record.partition, batch)
            except Exception as exc:  # noqa: BLE001
                log.exception("internal message %r could not be applied", message)
                self._dead_letter(batch, record, f"not applied: {exc}", exc)
                batch.local.clear()
                continue
            self._apply_local(batch)
        await self._flush(batch)
        if fences:
            self._fences.difference_update(fences)
            if not self._fences:
                self._fences_applied.set()

    def _reapplies(self, cause: Cause, redelivered_from: dict[tuple[str, int], int]) -> bool:
        """Whether this process applies `cause` (an input record) again: its partition is one
        this process was given (when the restart point was read), the record is at or after
        the group's committed offset there, and this process has not applied it yet. A cause on a partition another worker owns is that
        worker's input: its consequence is applied at once, never parked (it would wait for an
        input this process never applies)."""
        owned = self._redelivered_for
        if owned is None or cause[1] not in owned:
            return False
        if cause[2] <= self._applied.get((cause[0], cause[1]), -1):
            return False  # applied by this process already: a reply to it, not a leftover
        return cause[2] >= redelivered_from.get((cause[0], cause[1]), 0)

    async def _take_assignment(self) -> None:
        """Before applying anything: the recovered tables logged (once), a new assignment taken
        in, the internal partitions newly given fenced, and the deadline index (re)loaded."""
        self._log_recovered_tables()
        self._watch_assignment()
        await self._fence_new_partitions()
        self._load_deadlines()

    async def _load_restart_point(self) -> dict[tuple[str, int], int]:
        """The group's committed input offsets when this process was given its partitions (read
        again after each new assignment: partitions taken over resume from their last owner's
        commits)."""
        async with self._restart_point:
            assigned = frozenset(self._internal_partitions())
            if assigned != self._redelivered_for:
                self._redelivered_for = assigned
                self._redelivered_from = await self._committed_offsets()
                log.info("input is applied again from %s", self._redelivered_from)
            return self._redelivered_from

    async def _fence_new_partitions(self) -> None:
        """Fence the internal partitions assigned since last time and wait for the fences."""
        new = self._internal_partitions() - self._fenced
        if not new:
            return
        await self._load_restart_point()
        self._fenced |= new
        self._fences_applied.clear()
        log.info("fencing internal partitions %s before applying input", sorted(new))
        fences: list[Outgoing] = []
        for partition in sorted(new):
            token = f"{self.incarnation}:{partition}:{uuid.uuid4().hex[:8]}"
            self._fences.add(token)
            value = pickle.dumps((self.incarnation, None, Fence(token)))
            fences.append((self._name(topics.LEAD_EVENTS), b"", value, None, partition))
        await self._send_all(fences)
        try:
            await asyncio.wait_for(self._fences_applied.wait(), 30.0)
        except TimeoutError:
            log.warning("internal backlog not applied within 30 s; applying input on")
        else:
            log.info("internal backlog applied")

    async def on_timer(self, now: datetime | None) -> None:
        """Tick every lead due by `now` (the wall clock; None: the event-time watermark) and close
        ended weeks, with no event needed. Like a batch of input, it first takes in a new
        assignment: the timer must not tick leads given to another worker."""
        await self._take_assignment()
        now = now or self.watermark
        if now is None:
            return
        batch = _Batch()
        self._cause = None
        self._source = None
        self._tick_due(now, batch)
        self._close_weeks(now, batch)
        self._apply_local(batch)
        await self._flush(batch)

    # --- applying ------------------------------------------------------------------------

    def _apply(self, message: Internal, partition: int, batch: _Batch) -> None:
        """Apply `message` (input event or internal message) of `partition` to the overlay."""
        if isinstance(message, CountMql | CloseWeeks):
            self._apply_weekly(message, partition, batch)
            return
        if isinstance(message, Tick):
            key = message.lead_id.encode()
            state = self._read(LEAD_TABLE, key, batch)
            if state is not None:
                self._save_lead(
                    key, state, engine.tick(state, message.now, self.defs), partition, batch
                )
            return
        key = message_key(message).encode()
        if is_anonymous_message(message):
            anonymous, forwards = apply_anonymous(
                self._read(ANONYMOUS_TABLE, key, batch), message, self.defs.dedupe_ids_per_lead
            )
            batch.writes[(ANONYMOUS_TABLE, key)] = (partition, anonymous)
            self._forward(forwards, batch)
            return
        state = self._read(LEAD_TABLE, key, batch)
        step = engine.apply(state, message, self.defs)
        if step.ignored is not None:
            _count_ignored(step.ignored)
            if step.ignored.startswith("late:") and self._source is not None:
                self._dead_letter(batch, self._source, step.ignored, LateEvent(step.ignored))
        self._save_lead(key, state, step, partition, batch)
        self._forward(step.forwards, batch)

    def _save_lead(
        self, key: bytes, before: Any, step: engine.Step, partition: int, batch: _Batch
    ) -> None:
        batch.writes[(LEAD_TABLE, key)] = (partition, step.state)
        self._output(step.outputs, batch)
        for record in step.outputs:
            if (
                isinstance(record, Transition)
                and record.to_stage == "mql"
                and record.team_id in self.defs.teams
            ):
                count = CountMql(
                    record.record_id, record.team_id, record.at, -1 if record.deleted else 1
                )
                self._internal(WEEKLY_KEY, count, batch)
        after = step.state
        if after is None:
            return
        if before is None or after.version != before.version:
            batch.changed[key] = after  # one lead-state record per lead per batch: the latest
        if after.sla or after.lead_id in self._deadlines:
            self._deadlines.schedule(after.lead_id, engine.next_deadline(after, self.defs))

    def _apply_weekly(self, message: CountMql | CloseWeeks, partition: int, batch: _Batch) -> None:
        weekly = self._read(WEEKLY_TABLE, WEEKLY_KEY, batch) or WeeklyState()
        if isinstance(message, CountMql):
            counted = (message.record_id, message.at)
            if (counted in weekly.counted) == (message.delta > 0):
                return  # a re-delivered count, or the retraction of one never counted
            tally, records = sla.count_mql(
                weekly.tally, message.team_id, message.at, self.defs, message.delta
            )
            self._output(records, batch)
            live = weekly.counted | {counted} if message.delta > 0 else weekly.counted - {counted}
            weekly = WeeklyState(tally, live)
        else:
            tally, records = sla.close_weeks(weekly.tally, message.now, self.defs)
            self._output(records, batch)
            # a closed week is re-reported when one of its MQLs is counted or retracted late;
            # the ids of MQLs older than the correction window before the open weeks go
            first_open = sla.next_week_close(tally, self.defs)
            window = self.defs.correction_window + timedelta(days=8)
            horizon = first_open - window if first_open else None
            kept = {c for c in weekly.counted if horizon is None or c[1] >= horizon}
            weekly = WeeklyState(tally, frozenset(kept))
        batch.writes[(WEEKLY_TABLE, WEEKLY_KEY)] = (partition, weekly)
        self._week_end = sla.next_week_close(weekly.tally, self.defs)

    def _load_deadlines(self) -> None:
        """After a (re)start or a new assignment: index the next deadline of every lead this
        process owns now, and the weekly tally."""
        if self._deadlines_loaded:
            return
        self._deadlines_loaded = True
        self._deadlines = Deadlines()
        for key, raw in list(self._tables[LEAD_TABLE].items()):
            if key_partition(key, self._partitions) in self._assignment:
                state = table_codec.loads(raw)
                self._deadlines.schedule(state.lead_id, engine.next_deadline(state, self.defs))
        raw_weekly = self._tables[WEEKLY_TABLE].get(WEEKLY_KEY)
        if raw_weekly is not None:
            self._week_end = sla.next_week_close(table_codec.loads(raw_weekly).tally, self.defs)

    def _tick_due(self, now: datetime, batch: _Batch) -> None:
        """Fire the SLA timers of every lead due by `now`, in this batch: the deadline index
        holds only leads this process owns, so no message is needed (as replay's clock)."""
        for lead_id in self._deadlines.pop_due(now):
            key = lead_id.encode()
            try:
                self._apply(Tick(lead_id, now), key_partition(key, self._partitions), batch)
            except Exception:  # noqa: BLE001 — one lead's timers must not stop the others
                log.exception("SLA timers of lead %s could not fire", lead_id)

    def _close_weeks(self, now: datetime, batch: _Batch) -> None:
        if self._week_end is not None and self._week_end <= now:
            self._week_end = None  # known again once the tally has applied it
            self._internal(WEEKLY_KEY, CloseWeeks(now), batch)

    # --- reading and sending -------------------------------------------------------------

    def _read(self, table: str, key: bytes, batch: _Batch) -> Any:
        pending = batch.writes.get((table, key))
        if pending is not None:
            return pending[1]
        cached = self._decoded.get((table, key), _MISSING)
        if cached is not _MISSING:
            return cached
        raw = self._tables[table].get(key)
        value = None if raw is None else table_codec.loads(raw)
        self._remember(table, key, value)
        return value

    def _remember(self, table: str, key: bytes, value: Any) -> None:
        if len(self._decoded) >= _DECODED_MAX:
            self._decoded.clear()
        self._decoded[(table, key)] = value

    def _log_recovered_tables(self) -> None:
        """Once, before this process writes anything: each table's size and content digest, so
        a test (or an operator) can check recovery read every changelog record written."""
        if self._recovery_logged:
            return
        self._recovery_logged = True
        for name, table in self._tables.items():
            log.info("recovered %s: %s", name, table_digest(table.items()))

    def _watch_assignment(self) -> None:
        """Forget decoded values when the assignment changed: another worker may have written
        our keys meanwhile (the tables themselves are recovered by Faust)."""
        current = frozenset(self._internal_partitions())
        if current != self._assignment:
            kept = self._assignment & current  # applied offsets of partitions we keep still hold
            self._applied = {k: v for k, v in self._applied.items() if k[1] in kept}
            self._assignment = current
            self._decoded.clear()
            self._deadlines_loaded = False  # leads taken over have deadlines too
            # Partitions taken over resume from their last commit, maybe far behind the others:
            # the event-time watermark starts again from what is applied next (as after a
            # restart), or their leads' SLA timers would all fire at once.
            self.watermark = None
            self._fenced &= current  # partitions given back later are fenced again

    def _output(self, records: Iterable[Record], batch: _Batch) -> None:
        for record in records:
            key = (
                getattr(record, "lead_id", None) or getattr(record, "team_id", None) or ""
            ).encode()
            value = encode_record(str(record.kind), record.as_dict())
            batch.sends.append((self._name(OUTPUT_TOPIC[record.kind]), key, value, None, None))

    def _forward(self, messages: Iterable[Message], batch: _Batch) -> None:
        for message in messages:
            self._internal(message_key(message).encode(), message, batch)

    def _internal(self, key: bytes, message: Internal, batch: _Batch) -> None:
        """A message to `key`: applied in this batch if this process owns its partition (in
        order, after what came before it, as replay applies forwards), else sent to the owner
        through the internal topic."""
        partition = key_partition(key, self._partitions)
        if partition in self._assignment:
            batch.local.append((message, partition))
            return
        value = pickle.dumps((self.incarnation, self._cause, message))
        batch.sends.append((self._name(topics.LEAD_EVENTS), key, value, None, partition))

    def _apply_local(self, batch: _Batch) -> None:
        """Apply the messages to our own keys, first in first (each may add more)."""
        local = batch.local
        while local:
            message, partition = local.popleft()
            try:
                self._apply(message, partition, batch)
            except Exception as exc:  # noqa: BLE001 — one message must not stop the others
                log.exception("forwarded message %r could not be applied", message)
                if self._source is not None:
                    reason = f"a message it led to was not applied: {type(exc).__name__}: {exc}"
                    self._dead_letter(batch, self._source, reason, exc)

    def _dead_letter(self, batch: _Batch, message: Any, reason: str, exc: BaseException) -> None:
        metrics.WORKER_DEAD_LETTERS.labels(type(exc).__name__).inc()
        headers = [
            ("reason", reason[:500].encode()),
            ("error_class", type(exc).__name__.encode()),
            ("source_topic", str(message.topic).encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
        ]
        batch.sends.append(
            (self._name(topics.DLQ), message.key or b"", message.value or b"", headers, None)
        )

    async def _flush(self, batch: _Batch) -> None:
        """Send everything, wait for the broker's acks, then write the tables (module docstring)."""
        for key, state in batch.changed.items():
            snapshot = engine.snapshot(state, self.defs)
            if snapshot is not None:
                value = encode_record(str(snapshot.kind), snapshot.as_dict())
                batch.sends.append((self._name(topics.LEAD_STATE), key, value, None, None))
        _count_outputs(batch.sends, self._name(topics.LEAD_EVENTS))
        await self._send_all(batch.sends)
        if not batch.writes:
            return
        changelog: list[Outgoing] = []
        stored: list[tuple[str, bytes, bytes | None, object, int]] = []
        for (table, key), (partition, value) in batch.writes.items():
            raw = None if value is None else table_codec.dumps(value)
            # co-partitioned: a key's changelog partition is that of the message that changed it
            changelog.append((self._tables[table].changelog_topic, key, raw, None, partition))
            stored.append((table, key, raw, value, partition))
        # the state is durable before any later batch sends: a restart never sees a later
        # message without the state that preceded it
        written = await self._send_all(changelog)
        for table, key, raw, value, partition in stored:
            self._tables[table].put(key, raw, partition)
            self._remember(table, key, value)
        by_topic = {store.changelog_topic: store for store in self._tables.values()}
        for (topic, partition), offset in written.items():
            by_topic[topic].persisted(partition, offset)


class LateEvent(Exception):
    """An event older than its lead's lateness horizon (a dead letter, never a silent drop)."""


def _count_ignored(why: str) -> None:
    """As replay counts them: duplicates, and other reasons (a forward to a merge survivor is
    not counted: the survivor applies it)."""
    if why == "duplicate":
        metrics.WORKER_DUPLICATES.inc()
    elif why != "merged":
        metrics.WORKER_IGNORED.labels(why.split(":")[0]).inc()


def _count_outputs(sends: Sequence[Outgoing], internal_topic: str) -> None:
    counts: dict[str, int] = {}
    for outgoing in sends:
        topic = outgoing[0]
        counts[topic] = counts.get(topic, 0) + 1
    for topic, count in counts.items():
        if topic != internal_topic:
            metrics.WORKER_OUTPUT.labels(topic).inc(count)
