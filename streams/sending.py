"""Sending many records at once: one Kafka batch per topic partition, one acknowledgement each.

`producer.send()` costs a future, a partitioner call and an accumulator lookup per record, and
each acknowledgement is another event-loop callback; profiled, that was most of the worker's
send path. The pipeline already works a batch at a time, so it hands whole batches here and
they go out through aiokafka's batch API (`create_batch` / `send_batch`).

Records without an explicit partition are placed with the Java client's partitioner (murmur2
of the key), as every producer of the input topics does: a lead's records land in the same
partition number on every topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.partitioner import murmur2

from streams.dataloss import BrokerDataLoss

Outgoing = tuple[str, bytes, bytes | None, list[tuple[str, bytes]] | None, int | None]
"""topic, key, value (None: a tombstone), headers, partition (None: by key)."""


# Broker data loss (streams/dataloss.py): once it is known, nothing more is sent; a partition
# whose acknowledged offset goes back (the broker forgot its log, and a broker that lost the
# topic acknowledges writes to it at offset 0 and discards them) is reported to the callback.
_GUARD: dict[str, Any] = {"refused": None, "on_data_loss": None}


def refuse(reason: str) -> None:
    """Every later `send` raises BrokerDataLoss(reason)."""
    _GUARD["refused"] = reason


def on_data_loss(callback: Callable[[str], None] | None) -> None:
    """`callback(reason)` when an acknowledged offset went back (None: just raise)."""
    _GUARD["on_data_loss"] = callback


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner gives `key` (murmur2)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class BatchSender:
    """Sends sequences of records in order per partition and waits for the broker's acks."""

    def __init__(self, producer: Callable[[], Awaitable[Any]]) -> None:
        self._producer = producer  # → a started aiokafka.AIOKafkaProducer
        self._partitions: dict[str, int] = {}
        self._acked: dict[tuple[str, int], int] = {}  # last acknowledged offset per partition

    async def send(self, records: Sequence[Outgoing]) -> dict[tuple[str, int], int]:
        """Send `records`; return once all are acknowledged, with the last offset written per
        (topic, partition)."""
        if _GUARD["refused"] is not None:
            raise BrokerDataLoss(_GUARD["refused"])
        if not records:
            return {}
        producer = await self._producer()
        by_partition: dict[tuple[str, int], list[Outgoing]] = {}
        for record in records:
            topic, key, _, _, partition = record
            if partition is None:
                partition = key_partition(key, await self._partition_count(producer, topic))
            by_partition.setdefault((topic, partition), []).append(record)
        acks: list[tuple[tuple[str, int], int, Any]] = []  # (topic, partition), records, ack
        for (topic, partition), group in by_partition.items():
            batch = producer.create_batch()
            for _, key, value, headers, _ in group:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    acks.append(await self._submit(producer, batch, topic, partition))  # full
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"a record for {topic} is larger than a whole batch")
            acks.append(await self._submit(producer, batch, topic, partition))
        results = await asyncio.gather(*(ack for _, _, ack in acks))
        last: dict[tuple[str, int], int] = {}
        for (tp, count, _), metadata in zip(acks, results, strict=True):
            before = self._acked.get(tp)
            if before is not None and metadata.offset <= before:
                self._lost(
                    f"{tp[0]}[{tp[1]}] acknowledged a write at offset {metadata.offset} after "
                    f"one at {before}: its log is gone"
                )
            last[tp] = max(last.get(tp, -1), metadata.offset + count - 1)
        self._acked.update(last)
        return last

    def _lost(self, reason: str) -> None:
        callback = _GUARD["on_data_loss"]
        if callback is not None:
            callback(reason)
        raise BrokerDataLoss(reason)

    async def _submit(
        self, producer: Any, batch: Any, topic: str, partition: int
    ) -> tuple[tuple[str, int], int, Any]:
        batch.close()
        ack = await producer.send_batch(batch, topic, partition=partition)
        return (topic, partition), batch.record_count(), ack

    async def _partition_count(self, producer: Any, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(await producer.partitions_for(topic))
        return count
