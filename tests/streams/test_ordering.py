"""The worker's consumer scheduler (streams.ordering.ArrivalOrder) on fetched records, no broker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP

from streams.ordering import ArrivalOrder
from streams.topics import SEQ_HEADER

TOUCHES, LEADS, INTERNAL, CHANGELOG = "touches", "leads", "internal", "app-lead_to_state-changelog"


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    seq: int
    timestamp: int = 0

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(SEQ_HEADER, self.seq.to_bytes(16, "big"))]


class Consumer:
    """What the scheduler probes: generation, assignment, fetch-response high watermarks, and
    whether Faust is rebalancing."""

    def __init__(self) -> None:
        self.generation = 1
        self.assigned = {TP(TOUCHES, 0), TP(LEADS, 0), TP(INTERNAL, 0), TP(CHANGELOG, 0)}
        self.highwaters: dict[TP, int] = {}
        self.rebalancing = False


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    consumer = Consumer()
    ArrivalOrder.configure(
        [TOUCHES, LEADS],
        idle_ms=200,
        probe=lambda: (consumer.generation, consumer.assigned),
        startup_ms=0,
        highwater=lambda tp: consumer.highwaters.get(tp),
        held_topics=[INTERNAL],
        ready=lambda: not consumer.rebalancing,
    )
    yield consumer
    ArrivalOrder.configure([], idle_ms=200)


def fetched(*records: Record) -> dict[TP, list[Any]]:
    batches: dict[TP, list[Any]] = {}
    for record in records:
        batches.setdefault(TP(record.topic, record.partition), []).append(record)
    return batches


def delivered(scheduler: ArrivalOrder, *records: Record) -> list[tuple[str, int]]:
    return [(r.topic, r.offset) for _, r in scheduler.iterate(fetched(*records))]


def test_input_topics_are_merged_by_produce_order(consumer: Consumer) -> None:
    consumer.highwaters = {TP(TOUCHES, 0): 2, TP(LEADS, 0): 2}
    scheduler = ArrivalOrder()
    got = delivered(
        scheduler,
        Record(TOUCHES, 0, 0, seq=2),
        Record(TOUCHES, 0, 1, seq=3),
        Record(LEADS, 0, 0, seq=1),
        Record(LEADS, 0, 1, seq=4),
    )
    # each partition is at its high watermark: nothing more is coming, everything may go
    assert got == [(LEADS, 0), (TOUCHES, 0), (TOUCHES, 1), (LEADS, 1)]


def test_a_partition_with_records_waiting_in_the_broker_holds_the_merge(
    consumer: Consumer,
) -> None:
    consumer.highwaters = {TP(TOUCHES, 0): 1, TP(LEADS, 0): 5}
    scheduler = ArrivalOrder()
    assert delivered(scheduler, Record(TOUCHES, 0, 0, seq=7), Record(LEADS, 0, 0, seq=1)) == [
        (LEADS, 0)
    ]
    assert scheduler.held() == 1  # leads 1..4 may come before touches 0
    # touches 0 (seq 7) goes before leads 1 (seq 9); touches is then at its end: leads 1 goes
    assert delivered(scheduler, Record(LEADS, 0, 1, seq=9)) == [(TOUCHES, 0), (LEADS, 1)]


def test_nothing_an_agent_consumes_is_delivered_while_faust_is_rebalancing(
    consumer: Consumer,
) -> None:
    """Faust empties the agents' queues when it resumes flow after the seek to the committed
    offsets: a record delivered before that would be lost."""
    consumer.highwaters = {TP(TOUCHES, 0): 1, TP(LEADS, 0): 1}
    consumer.rebalancing = True
    scheduler = ArrivalOrder()
    got = delivered(
        scheduler,
        Record(TOUCHES, 0, 0, seq=1),
        Record(LEADS, 0, 0, seq=2),
        Record(INTERNAL, 0, 0, seq=0),
        Record(CHANGELOG, 0, 0, seq=0),
    )
    assert got == [(CHANGELOG, 0)]  # table recovery is not held
    consumer.rebalancing = False
    assert delivered(scheduler) == [(INTERNAL, 0), (TOUCHES, 0), (LEADS, 0)]
    assert delivered(scheduler, Record(INTERNAL, 0, 1, seq=0)) == [(INTERNAL, 1)]


def test_records_fetched_again_after_a_seek_back_replace_the_held_ones(
    consumer: Consumer,
) -> None:
    consumer.highwaters = {TP(TOUCHES, 0): 3, TP(LEADS, 0): 1}
    consumer.rebalancing = True
    scheduler = ArrivalOrder()
    first = [Record(TOUCHES, 0, offset, seq=offset) for offset in range(3)]
    internal = [Record(INTERNAL, 0, offset, seq=0) for offset in range(2)]
    assert delivered(scheduler, *first, *internal, Record(LEADS, 0, 0, seq=9)) == []
    # the seek to the committed offset (1) fetches offsets 1.. again
    assert delivered(scheduler, *first[1:], *internal[1:]) == []
    consumer.rebalancing = False
    assert delivered(scheduler) == [(INTERNAL, 0), (INTERNAL, 1)] + [
        (TOUCHES, offset) for offset in range(3)
    ] + [(LEADS, 0)]


def test_a_new_generation_drops_what_is_held(consumer: Consumer) -> None:
    consumer.highwaters = {TP(TOUCHES, 0): 9, TP(LEADS, 0): 0}
    consumer.rebalancing = True
    scheduler = ArrivalOrder()
    delivered(scheduler, Record(TOUCHES, 0, 0, seq=1), Record(INTERNAL, 0, 0, seq=0))
    consumer.generation, consumer.rebalancing = 2, False
    assert delivered(scheduler) == []  # Faust seeks back to the committed offsets: they come again
    assert scheduler.held() == 0
