"""Arrival order across the co-partitioned input topics: the consumer scheduler of the worker.

Kafka orders records within a partition only. A lead's events arrive on three topics
(touches, activities, leads), so Faust's round-robin delivery can apply a `deal_lost` before the
`lead_created` that preceded it upstream. Like Kafka Streams (`max.task.idle.ms`), this
scheduler merges every input partition this worker is assigned by arrival key and holds a
record back until every other assigned input partition has a later record buffered or has
nothing more to deliver. A partition with nothing buffered has nothing more when the last fetch
response's high watermark says its next offset is the end (the fetch-response high watermark is
right on Tansu too, unlike ListOffsets); while records are known to be waiting in the broker,
the merge waits for them (at most `LAG_WAIT_S`, then it warns and goes on), however slow the
fetch is. Only when that is unknown (no fetch response yet, or no record seen since an
assignment) does it fall back to waiting `idle_ms` (the silent partition is then taken to be
caught up). With one worker that restores the produce order exactly, across leads too
(identity steps and merges span partitions); with several, each worker's share is in order.

The arrival key is the `leadflow-seq` header (`leadflow produce` stamps 16 bytes: the run's start
in ns, then the line number, both big-endian, so bytes compare in produce order), else the
record timestamp. Records of other topics (the internal topic) pass straight through. Held
records are not delivered, so they are not acked and never committed before they are applied;
after a rebalance (a new consumer generation) the held records are dropped, because Faust seeks
back to the committed offsets and fetches them again.

Nothing the worker applies (input or internal) is delivered while Faust is still rebalancing.
Faust resumes the stream partitions before it seeks them to the committed offsets, and once the
seek is done `flow_control.resume()` empties every agent's queue (and the worker's inboxes,
`streams.bulk`): records delivered in between were silently lost (the fetch position had moved
past them, so they never came again). They are held here instead; if the consumer seeks back and fetches them again, the new fetch
replaces what is held from that offset on.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from faust.types import TP
from faust.types.transports import SchedulingStrategyT

from streams.topics import SEQ_HEADER

log = logging.getLogger("leadflow.worker")

LAG_WAIT_S = 30.0  # longest wait for a partition whose records are known to be in the broker


def _drop_refetched(held: deque[tuple[bytes, float, Any]], batch: Sequence[Any]) -> None:
    """The consumer seeked back and fetches again: the new fetch replaces held records from its
    first offset on."""
    if batch and held:
        first = batch[0].offset
        while held and held[-1][2].offset >= first:
            held.pop()


def arrival_key(record: Any) -> bytes:
    """The merge key of a consumer record: its `leadflow-seq` header, else its timestamp."""
    for name, value in record.headers or ():
        if name == SEQ_HEADER:
            return bytes(value)
    return (max(record.timestamp, 0) * 1_000_000).to_bytes(8, "big") + bytes(8)


class ArrivalOrder(SchedulingStrategyT):
    """Faust `ConsumerScheduler`: merged delivery of the input topics, pass-through for others.

    Configure with `ArrivalOrder.configure(...)` before the app starts (Faust builds the
    scheduler itself, with no arguments).
    """

    merged_topics: ClassVar[frozenset[str]] = frozenset()
    idle_s: ClassVar[float] = 0.2
    # after an assignment, partitions start delivering at different times (offset resets,
    # resumed flow): until each has delivered once, a silent partition is waited for this long
    startup_s: ClassVar[float] = 3.0
    probe: ClassVar[Any] = None  # () -> (consumer generation id, assigned TPs)
    highwater: ClassVar[Any] = None  # TP -> the end offset of its last fetch response, or None
    held_topics: ClassVar[frozenset[str]] = frozenset()  # also held while rebalancing
    ready: ClassVar[Any] = None  # () -> may records be delivered now (not rebalancing)

    @classmethod
    def configure(
        cls,
        topics: Sequence[str],
        idle_ms: int,
        probe: Any = None,
        startup_ms: int = 3000,
        highwater: Any = None,
        held_topics: Sequence[str] = (),
        ready: Any = None,
    ) -> None:
        """Which topics to merge, how long to wait for a silent partition (in steady state and
        just after an assignment), a probe of the consumer's generation and assignment, and
        the other topics the worker applies, held like the merged ones until `ready()`."""
        cls.merged_topics = frozenset(topics)
        cls.held_topics = frozenset(held_topics) | cls.merged_topics
        cls.ready = staticmethod(ready) if ready is not None else None
        cls.idle_s = idle_ms / 1000
        cls.startup_s = startup_ms / 1000
        cls.probe = staticmethod(probe) if probe is not None else None
        cls.highwater = staticmethod(highwater) if highwater is not None else None

    def __init__(self) -> None:
        # input partition -> held (arrival key, monotonic receive time, record), in offset order
        self._held: dict[TP, deque[tuple[bytes, float, Any]]] = {}
        # other held partitions -> records fetched while not ready, in offset order
        self._waiting: dict[TP, deque[tuple[bytes, float, Any]]] = {}
        self._generation: Any = None
        self._assigned: frozenset[TP] = frozenset()
        self._delivered: set[TP] = set()  # assigned partitions that delivered this generation
        self._assigned_at = time.monotonic()
        self._next_offset: dict[TP, int] = {}  # per merged partition, since the assignment
        self._lag_warned = False

    def iterate(self, records: Mapping[TP, list[Any]]) -> Iterator[tuple[TP, Any]]:
        """Pass-through records first, then every merged record that may go now, in order."""
        self._observe_consumer()
        now = time.monotonic()
        merged, held_topics = self.merged_topics, self.held_topics
        ready = self.ready is None or self.ready()
        for tp, batch in records.items():
            if tp.topic not in held_topics or (
                ready and tp.topic not in merged and not self._waiting
            ):
                for record in batch:
                    yield tp, record
                continue
            if tp.topic in merged:
                held = self._held.setdefault(tp, deque())
                self._delivered.add(tp)
                if batch:
                    self._next_offset[tp] = batch[-1].offset + 1
            else:
                held = self._waiting.setdefault(tp, deque())
            _drop_refetched(held, batch)
            held.extend((arrival_key(record), now, record) for record in batch)
        if not ready:
            return
        while self._waiting:
            tp, waiting = self._waiting.popitem()
            for _, _, record in waiting:
                yield tp, record
        yield from self._release(now)

    def held(self) -> int:
        """How many records are held back right now."""
        return sum(len(q) for q in self._held.values())

    def _release(self, now: float) -> Iterator[tuple[TP, Any]]:
        held = self._held
        wait_s = self.idle_s
        if now - self._assigned_at < self.startup_s and not self._assigned <= self._delivered:
            wait_s = self.startup_s
        heads = [(q[0][0], tp) for tp, q in held.items() if q]
        heapq.heapify(heads)
        while heads:
            _, tp = heads[0]
            queue = held[tp]
            silent = [other for other in self._assigned if not held.get(other)]
            if silent and not self._may_pass(silent, now - queue[0][1], wait_s):
                return
            _, _, record = queue.popleft()
            yield tp, record
            if queue:
                heapq.heapreplace(heads, (queue[0][0], tp))
            else:
                heapq.heappop(heads)

    def _may_pass(self, silent: list[TP], waited_s: float, wait_s: float) -> bool:
        """May a record that waited `waited_s` go before the `silent` partitions' next ones?"""
        if self.idle_s <= 0:
            return True  # live: arrival order as fetched
        unknown = False
        for tp in silent:
            end = self.highwater(tp) if self.highwater is not None else None
            position = self._next_offset.get(tp)
            if end is None or position is None:
                unknown = True
            elif position < end:  # its records are in the broker, not fetched yet
                if waited_s < LAG_WAIT_S:
                    return False
                if not self._lag_warned:
                    self._lag_warned = True
                    log.warning(
                        "input %s not fetched within %.0f s; merging without it", tp, waited_s
                    )
        return not unknown or waited_s >= wait_s

    def _observe_consumer(self) -> None:
        if self.probe is None:
            return
        generation, assigned = self.probe()
        assigned = frozenset(tp for tp in assigned if tp.topic in self.merged_topics)
        if generation != self._generation or assigned != self._assigned:
            if generation != self._generation:
                self._held.clear()  # Faust seeks back to the committed offsets: they come again
                self._waiting.clear()
                self._next_offset.clear()
            self._generation = generation
            self._assigned = assigned
            self._delivered &= assigned
            self._assigned_at = time.monotonic()
