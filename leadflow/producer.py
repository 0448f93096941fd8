"""Publishing JSON Lines events to the input topics (validated, keyed by lead)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from schemas.errors import LeadflowError
from schemas.serde import SchemaError, encode_event
from streams.core.errors import InvalidEvent
from streams.core.events import MAX_EVENT_BYTES, event_to_json, parse_event, partition_key
from streams.topics import TOPIC_OF_EVENT_TYPE, clock_header, seq_header


@dataclass
class ProduceReport:
    """What `produce` did: counts per topic and the rejected lines with their reasons."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def encode_line(raw: bytes, fmt: Literal["avro", "json"]) -> tuple[str, bytes, bytes, datetime]:
    """(topic, key, value, occurred_at) for one JSON line; InvalidEvent/SchemaError when it is
    not valid."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event: larger than {MAX_EVENT_BYTES} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidEvent("event: not valid JSON") from None
    event = parse_event(obj)
    canonical = event_to_json(event)
    value = encode_event(canonical) if fmt == "avro" else orjson.dumps(canonical)
    topic = TOPIC_OF_EVENT_TYPE[str(event.event_type)]
    return topic, partition_key(event).encode(), value, event.occurred_at


async def produce_file(
    path: Path,
    bootstrap: str,
    fmt: Literal["avro", "json"] = "avro",
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    topic_prefix: str = "",
) -> ProduceReport:
    """Validate and publish every line of `path`; invalid lines are reported, not sent."""
    report = ProduceReport()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_batch_size=262144,
        enable_idempotence=False,  # Tansu rejects InitProducerId (INFRA.md)
        request_timeout_ms=15000,
    )
    try:
        await asyncio.wait_for(producer.start(), timeout=15)
    except (KafkaConnectionError, KafkaError, OSError, TimeoutError):
        await producer.stop()
        raise LeadflowError(
            f"no Kafka broker answers at {bootstrap}; start one with `leadflow stack up` or pass --bootstrap"
        ) from None
    started = time.perf_counter()
    run_started_ns = time.time_ns()
    pending = []
    clock: datetime | None = None
    try:
        with open(path, "rb") as source:
            for line_no, raw in enumerate(source, start=1):
                if not raw.strip():
                    continue
                try:
                    topic, key, value, occurred_at = encode_line(raw.rstrip(b"\n"), fmt)
                except (InvalidEvent, SchemaError) as exc:
                    report.rejected.append((line_no, str(exc)))
                    continue
                topic = topic_prefix + topic
                # the arrival order the worker restores across topics (streams/ordering.py), and
                # the event-time clock replay has before this line (streams/pipeline.py)
                headers = [seq_header(run_started_ns, line_no)]
                if clock is not None:
                    headers.append(clock_header(clock))
                if clock is None or occurred_at > clock:
                    clock = occurred_at
                pending.append(await producer.send(topic, value, key=key, headers=headers))
                report.sent += 1
                report.per_topic[topic] = report.per_topic.get(topic, 0) + 1
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
                if progress is not None:
                    progress(line_no)
                if rate:
                    ahead = report.sent / rate - (time.perf_counter() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    except KafkaError as exc:
        raise LeadflowError(f"publishing to {bootstrap} failed: {exc}") from None
    finally:
        await producer.stop()
    report.elapsed_s = time.perf_counter() - started
    return report
