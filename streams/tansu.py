"""Work-arounds for the embedded broker (Tansu), isolated here and harmless on Apache Kafka.

Registered as the Faust transport `leadflow://` (entry point `faust.transports`):
- **fetch wait**: Faust hard-codes the consumer's `fetch_max_wait_ms=1500`; with Tansu that puts
  p99 latency near 3 s. The wait comes from `configure(fetch_max_wait_ms=...)` (one place,
  set from settings by the worker).
- **end offsets**: Tansu's ListOffsets(LATEST) returns the base offset of the last *batch* + 1,
  so Faust's table recovery (which reads up to `highwaters()`) silently skips the rest of the
  last changelog batch. We read from `end − 1` once per partition and take the last offset the
  fetch returns + 1. On Apache Kafka `end − 1` is the last record, so the answer is unchanged
  (one small extra fetch per partition at recovery).

The transport's consumer also does the worker's bulk delivery (`streams.bulk.BulkConsumer`),
which is not a work-around: it is the same on any broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.bulk import BulkConsumer

_SETTINGS: dict[str, Any] = {"fetch_max_wait_ms": 20, "bootstrap": None}


def configure(fetch_max_wait_ms: int, bootstrap: str | None) -> None:
    """Set the consumer fetch wait and the bootstrap used for end-offset probes (None: no
    probe, Faust's end offsets as the broker reports them)."""
    _SETTINGS.update(fetch_max_wait_ms=fetch_max_wait_ms, bootstrap=bootstrap)


async def exact_end_offsets(bootstrap: str, reported: Mapping[TP, int]) -> dict[TP, int]:
    """End offsets corrected for brokers that report the last batch's base offset + 1."""
    exact = dict(reported)
    probe_needed = {tp: end for tp, end in reported.items() if end > 0}
    if not probe_needed:
        return exact
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await probe.start()
    try:
        parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in probe_needed}
        probe.assign(list(parts.values()))
        for tp, end in probe_needed.items():
            probe.seek(parts[tp], end - 1)
        pending = set(probe_needed)
        for _ in range(20):
            if not pending:
                break
            batch = await probe.getmany(*[parts[tp] for tp in pending], timeout_ms=250)
            for tp in list(pending):
                records = batch.get(parts[tp])
                if records:
                    exact[tp] = max(exact[tp], records[-1].offset + 1)
                    pending.discard(tp)
    finally:
        await probe.stop()
    return exact


async def committed_offsets(
    bootstrap: str, group_id: str, partitions: list[TP]
) -> dict[tuple[str, int], int]:
    """The group's committed offset of each partition (partitions with none are left out).

    Read with a probe consumer that never joins the group (OffsetFetch only); not a Tansu
    work-around, kept here beside the other probe.
    """
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await probe.start()
    try:
        committed = {}
        for tp in partitions:
            offset = await probe.committed(TopicPartition(tp.topic, tp.partition))
            if offset is not None:
                committed[(tp.topic, tp.partition)] = offset
        return committed
    finally:
        await probe.stop()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with the two work-arounds."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka passes this to its fetcher when the consumer starts
        consumer._fetch_max_wait_ms = int(_SETTINGS["fetch_max_wait_ms"])
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        bootstrap = _SETTINGS["bootstrap"]
        if not bootstrap:
            return reported
        return await exact_end_offsets(bootstrap, reported)


class Consumer(BulkConsumer):
    """The worker's consumer (bulk delivery, `streams.bulk`) using the patched thread."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """The `leadflow://` transport: aiokafka with the work-arounds above."""

    Consumer = Consumer
