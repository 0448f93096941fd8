"""Arrival order across the co-partitioned input topics: the consumer scheduler of the worker.

Kafka orders records within a partition only. A lead's events arrive on three topics
(touches, activities, leads), so Faust's round-robin delivery can apply a `deal_lost` before the
`lead_created` that preceded it upstream. Like Kafka Streams (`max.task.idle.ms`), this
scheduler merges the input partitions that share a partition number by arrival key and holds a
record back until every other input partition of its number has a later record buffered, or
until it has waited `idle_ms` (the other partitions are then taken to be caught up).

The arrival key is the `leadflow-seq` header (`leadflow produce` stamps 16 bytes: the run's start
in ns, then the line number, both big-endian, so bytes compare in produce order), else the
record timestamp. Records of other topics (the internal topic) pass straight through. Held
records are not delivered, so they are not acked and never committed before they are applied;
after a rebalance (a new consumer generation) the held records are dropped, because Faust seeks
back to the committed offsets and fetches them again.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from faust.types import TP
from faust.types.transports import SchedulingStrategyT

from streams.topics import SEQ_HEADER


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
    generation: ClassVar[Any] = None  # () -> current consumer generation id

    @classmethod
    def configure(cls, topics: Sequence[str], idle_ms: int, generation: Any = None) -> None:
        """Which topics to merge, how long to wait for a silent partition, the generation probe."""
        cls.merged_topics = frozenset(topics)
        cls.idle_s = idle_ms / 1000
        cls.generation = staticmethod(generation) if generation is not None else None

    def __init__(self) -> None:
        # partition number -> topic -> held (arrival key, monotonic receive time, record)
        self._held: dict[int, dict[str, deque[tuple[bytes, float, Any]]]] = {}
        self._generation: Any = None

    def iterate(self, records: Mapping[TP, list[Any]]) -> Iterator[tuple[TP, Any]]:
        """Pass-through records first, then every merged record that may go now, in order."""
        self._drop_if_rebalanced()
        now = time.monotonic()
        merged = self.merged_topics
        for tp, batch in records.items():
            if tp.topic not in merged:
                for record in batch:
                    yield tp, record
                continue
            held = self._held.setdefault(tp.partition, {}).setdefault(tp.topic, deque())
            held.extend((arrival_key(record), now, record) for record in batch)
        for partition, by_topic in self._held.items():
            yield from self._release(partition, by_topic, now)

    def held(self) -> int:
        """How many records are held back right now."""
        return sum(len(q) for by_topic in self._held.values() for q in by_topic.values())

    def _release(
        self, partition: int, by_topic: dict[str, deque[tuple[bytes, float, Any]]], now: float
    ) -> Iterator[tuple[TP, Any]]:
        heads = [(q[0][0], topic) for topic, q in by_topic.items() if q]
        heapq.heapify(heads)
        while heads:
            key, topic = heads[0]
            queue = by_topic[topic]
            waited = now - queue[0][1]
            others_ready = all(
                by_topic.get(other) for other in self.merged_topics if other != topic
            )
            if not others_ready and waited < self.idle_s:
                return
            _, _, record = queue.popleft()
            yield TP(topic, partition), record
            if queue:
                heapq.heapreplace(heads, (queue[0][0], topic))
            else:
                heapq.heappop(heads)

    def _drop_if_rebalanced(self) -> None:
        if self.generation is None:
            return
        current = self.generation()
        if current != self._generation:
            self._held.clear()
            self._generation = current
