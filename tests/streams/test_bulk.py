"""The worker's inboxes (streams.bulk.Inbox) on their own: batches, generations, acks, clearing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from streams.bulk import ROUTES, BulkConsumer, Inbox


@dataclass(eq=False)
class Record:
    offset: int
    generation_id: int = 1


@dataclass
class Consumer:
    tracked: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)

    def track_message(self, record: Record) -> None:
        self.tracked.append(record.offset)

    def ack(self, record: Record) -> None:
        self.acked.append(record.offset)


@dataclass
class App:
    """What an inbox uses of the Faust app."""

    consumer: Consumer = field(default_factory=Consumer)
    consumer_generation_id: int = 1
    flow_control: FlowControlEvent = field(default_factory=FlowControlEvent)


def take(inbox: Inbox, max_records: int, within_s: float = 0.0) -> list[int]:
    async def run() -> list[Any]:
        return await inbox.take(max_records, within_s)

    return [r.offset for r in asyncio.run(run())]


def test_a_batch_holds_at_most_max_records_in_fetch_order_each_tracked() -> None:
    app = App()
    inbox = Inbox(app)
    for offset in range(5):
        inbox.put(Record(offset))
    assert take(inbox, 3) == [0, 1, 2]
    assert take(inbox, 3) == [3, 4]
    assert app.consumer.tracked == [0, 1, 2, 3, 4] and app.consumer.acked == []


def test_records_of_an_earlier_generation_are_dropped_not_applied() -> None:
    app = App(consumer_generation_id=2)
    inbox = Inbox(app)
    inbox.put(Record(7, generation_id=1))
    inbox.put(Record(8, generation_id=2))
    assert take(inbox, 10) == [8]
    assert app.consumer.tracked == [8]


def test_a_batch_is_acked_once_the_loop_body_has_applied_it() -> None:
    app = App()
    inbox = Inbox(app)
    applied: list[list[int]] = []

    async def run() -> None:
        batches = inbox.batches(2, 0.0)
        inbox.put(Record(0))
        inbox.put(Record(1))
        batch = await anext(batches)
        assert app.consumer.acked == []  # not before it is applied
        applied.append([r.offset for r in batch])
        inbox.put(Record(2))
        await anext(batches)
        assert app.consumer.acked == [0, 1]
        await batches.aclose()

    asyncio.run(run())
    assert applied == [[0, 1]]


def test_take_waits_for_the_first_record_then_briefly_for_more() -> None:
    app = App()
    inbox = Inbox(app)

    async def run() -> list[int]:
        async def later() -> None:
            await asyncio.sleep(0.01)
            inbox.put(Record(0))
            await asyncio.sleep(0.01)
            inbox.put(Record(1))

        feeder = asyncio.create_task(later())
        batch = await inbox.take(10, within_s=0.5)
        await feeder
        return [r.offset for r in batch]

    assert asyncio.run(run()) == [0, 1]


def test_faust_empties_the_inbox_with_the_agents_queues() -> None:
    """On a rebalance and when flow resumes after it (see streams/ordering.py)."""
    app = App()
    inbox = Inbox(app)
    inbox.put(Record(0))
    app.flow_control.resume()
    assert inbox.qsize() == 0


def test_the_consumer_routes_records_after_fausts_read_offset_bookkeeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Routed topics go to their inbox (a record before the read offset is a re-fetch and is
    dropped; a jump leaves a gap for Faust's commit), other topics go on to Faust."""
    routed, other = TP("leadflow.touches", 0), TP("app-lead_to_state-changelog", 0)
    fetched = [
        (other, FetchedRecord(routed.topic, 0)),
        (routed, FetchedRecord(routed.topic, 4)),
        (routed, FetchedRecord(routed.topic, 5)),
        (routed, FetchedRecord(routed.topic, 9)),
    ]

    async def faust_getmany(self: Any, timeout: float) -> Any:
        for tp, record in fetched:
            yield tp, record

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", faust_getmany)
    consumer: Any = object.__new__(BulkConsumer)
    consumer._read_offset = defaultdict(lambda: None, {routed: 5})  # after a seek to 5
    consumer.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    gaps: list[tuple[TP, int, int]] = []

    async def add_gap(tp: TP, first: int, last: int) -> None:
        gaps.append((tp, first, last))

    consumer._add_gap = add_gap
    app = App()
    inbox = Inbox(app)
    monkeypatch.setitem(ROUTES, routed.topic, inbox)

    async def run() -> list[tuple[TP, int]]:
        return [(tp, record.offset) async for tp, record in consumer.getmany(1.0)]

    assert asyncio.run(run()) == [(other, 0)]
    assert take(inbox, 10) == [5, 9]  # 4 was before the read offset: fetched again
    assert gaps == [(routed, 6, 9)]
    assert consumer._read_offset[routed] == 9


@dataclass(eq=False)
class FetchedRecord:
    topic: str
    offset: int
    generation_id: int = 1
