"""Broker data loss: noticing that the broker forgot topics, records or committed offsets.

The embedded broker (Tansu, memory storage) loses every topic, record and group on a restart
and then acknowledges writes to the missing topics and discards them (../shared/INFRA.md). A
process that went on would write into nothing and serve state the log no longer backs. The
worker and the sink therefore watch what the broker says and stop (`BrokerDataLoss`) when:

- a topic they use existed and is gone;
- a committed offset they saw (or made) is gone or went back;
- a committed offset is ahead of the log end. The log end is the high watermark of the last
  fetch response, not ListOffsets (wrong on Tansu: streams/tansu.py);
- (the worker's sends, streams/sending.py) a partition's acknowledged offset went back.

None of these happens on a healthy Apache Kafka cluster: there they mean an admin deleted a
topic or reset a running group, or an unclean leader election truncated the log, and stopping
is right there too. A broker that does not answer is not data loss: that is waited out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas.errors import LeadflowError
from streams import metrics

TP = tuple[str, int]


class BrokerDataLoss(LeadflowError):
    """The broker lost data this process relies on (topics, records or committed offsets)."""


class DataLossDetector:
    """Remembers what the broker said before; `verdict()` of a new observation names the loss
    (None: nothing lost). Pure: no I/O."""

    def __init__(self) -> None:
        self._topics_seen: set[str] = set()
        self._committed: dict[TP, int] = {}

    def committed_by_us(self, offsets: Mapping[TP, int]) -> None:
        """Offsets this process has just committed (the broker must show at least these)."""
        for tp, offset in offsets.items():
            if offset > self._committed.get(tp, -1):
                self._committed[tp] = offset

    def verdict(
        self,
        watched_topics: Iterable[str],
        existing_topics: set[str] | None,
        committed: Mapping[TP, int | None],
        highwater: Mapping[TP, int | None],
    ) -> str | None:
        """What was lost, as one readable sentence, or None. `existing_topics` None: the
        broker did not answer (no verdict on topics); `committed` and `highwater` hold only
        partitions the broker answered for (None: no committed offset; no log end known)."""
        watched = set(watched_topics)
        if existing_topics is not None:
            gone = sorted((self._topics_seen & watched) - existing_topics)
            if gone:
                return f"topics {', '.join(gone)} existed and are gone"
            self._topics_seen |= watched & existing_topics
        for tp, offset in sorted(committed.items()):
            before = self._committed.get(tp)
            if before is not None and before > 0 and (offset is None or offset < before):
                now = "none" if offset is None else str(offset)
                return (
                    f"the committed offset of {tp[0]}[{tp[1]}] was {before} and is now {now} "
                    "(the group's offsets are gone)"
                )
            end = highwater.get(tp)
            if offset is not None and end is not None and offset > end:
                return (
                    f"the committed offset of {tp[0]}[{tp[1]}] ({offset}) is ahead of the log "
                    f"end ({end}): records were lost"
                )
            if offset is not None and offset > self._committed.get(tp, -1):
                self._committed[tp] = offset
        return None


class BrokerProbe:
    """A consumer that never joins a group: reads topic names and a group's committed offsets
    (OffsetFetch) with a bound on each wait, so an unreachable broker costs seconds, not a hang."""

    def __init__(self, bootstrap: str, group_id: str, timeout_s: float = 3.0) -> None:
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None  # made in the running loop
        self._started = False

    async def _ensure_started(self) -> bool:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self._group_id,
                enable_auto_commit=False,
                request_timeout_ms=int(self._timeout_s * 1000),
            )
        if not self._started:
            try:
                await asyncio.wait_for(self._consumer.start(), self._timeout_s)
            except Exception:  # noqa: BLE001 — not reachable now: try again next time
                return False
            self._started = True
        return True

    async def topics(self) -> set[str] | None:
        """Every topic name the broker knows (None: it did not answer in time)."""
        if not await self._ensure_started():
            return None
        assert self._consumer is not None
        try:
            return set(await asyncio.wait_for(self._consumer.topics(), self._timeout_s))
        except Exception:  # noqa: BLE001
            return None

    async def committed(self, partitions: Iterable[TP]) -> dict[TP, int | None]:
        """The group's committed offset per partition (None: none); partitions the broker did
        not answer for in time are left out."""
        found: dict[TP, int | None] = {}
        if not await self._ensure_started():
            return found
        assert self._consumer is not None
        for topic, partition in partitions:
            try:
                found[(topic, partition)] = await asyncio.wait_for(
                    self._consumer.committed(TopicPartition(topic, partition)), self._timeout_s
                )
            except Exception:  # noqa: BLE001
                break  # unreachable: no verdict from the rest either
        return found

    async def stop(self) -> None:
        if self._started and self._consumer is not None:
            try:
                await asyncio.wait_for(self._consumer.stop(), 1.0)
            except Exception:  # noqa: BLE001 — stopping anyway
                pass


def report(process: str, reason: str) -> BrokerDataLoss:
    """Count the loss and return the error to stop with (its message is the one line to show)."""
    metrics.BROKER_DATA_LOSS.labels(process).inc()
    message = (
        f"broker data loss: {reason}. The broker lost data (a restart of the embedded broker "
        f"loses everything); {process} stops rather than write into nothing. Recreate the topics "
        "and replay the input (leadflow topics create, leadflow produce) before starting again."
    )
    return BrokerDataLoss(message)
