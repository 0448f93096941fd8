"""Bulk delivery of the worker's own topics: a fetched record reaches its batch in one step.

Faust hands each record to an agent through `wait_first(callback)` in the fetch loop (two tasks
per record), the Conductor, the channel queue and the stream iterator (an event-loop turn,
processors and sensors per record): ~90 µs per record here, where aiokafka alone fetches and
decodes one in ~8 µs (`bench/stream_throughput.py`). For the topics routed here the worker's
consumer (`BulkConsumer`) does Faust's read-offset bookkeeping and appends the record to an
`Inbox`; a worker task takes a batch from the inbox, tracks it as Faust's streams do (a
rebalance waits for tracked records), applies it, and acks it (Faust commits what is acked).

Everything else stays Faust's: the group and its assignments, table recovery, commits, timers,
and flow control around rebalances: an inbox is emptied when Faust empties the agents' queues,
and records of an earlier consumer generation are dropped, not applied.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

ROUTES: dict[str, Inbox] = {}  # topic name → the inbox its records go to


class Inbox:
    """Records of some topics waiting for the task that applies them, in fetch order."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._records: deque[Any] = deque()
        self._arrived = asyncio.Event()
        app.flow_control.manage_queue(self)  # emptied with the agents' queues

    def route(self, topic: Any) -> None:
        """Subscribe to the Faust `topic` (as an agent on it would) and deliver its records
        here."""
        for name in topic.topics:
            ROUTES[name] = self
        self._app.topics.add(topic)

    def put(self, record: Any) -> None:
        self._records.append(record)
        self._arrived.set()

    def qsize(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        self._records.clear()

    async def take(self, max_records: int, within_s: float) -> list[Any]:
        """The next batch: at most `max_records`, waiting up to `within_s` for more once the
        first is there; each tracked by the consumer until `done`."""
        records = self._records
        while not records:
            self._arrived.clear()
            await self._arrived.wait()
        if len(records) < max_records and within_s > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), within_s)
            except TimeoutError:
                pass
        app = self._app
        generation = app.consumer_generation_id
        consumer = app.consumer
        batch = []
        while records and len(batch) < max_records:
            record = records.popleft()
            if record.generation_id != generation:
                continue  # assigned anew since: Faust fetches it again from the committed offset
            consumer.track_message(record)
            batch.append(record)
        return batch

    def done(self, batch: list[Any]) -> None:
        """The batch is applied: Faust may commit it."""
        ack = self._app.consumer.ack
        for record in batch:
            ack(record)

    async def batches(self, max_records: int, within_s: float) -> AsyncIterator[list[Any]]:
        """Batches until cancelled; each is acked once the loop body has applied it."""
        while True:
            batch = await self.take(max_records, within_s)
            if batch:
                yield batch
                self.done(batch)


class BulkConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering the records of routed topics to their inbox."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        routes = ROUTES
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        async for tp, record in super().getmany(timeout):
            inbox = routes.get(tp.topic)
            if inbox is None:
                yield tp, record  # Faust's own delivery (table changelogs, ...)
                continue
            # what Faust's fetch loop does before delivering a record (`_drain_messages`)
            offset = record.offset
            last = read_offset[tp]
            if last is not None and offset < last:
                continue  # fetched again after a seek: already delivered
            if last and offset - last > 1 and acks_enabled_for(tp.topic):
                await self._add_gap(tp, last + 1, offset)
            read_offset[tp] = offset
            inbox.put(record)
