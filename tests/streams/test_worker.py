"""`leadflow worker` against the real broker: it starts, applies events through the core,
writes decodable outputs, and dead-letters bad input with headers instead of crashing.

Equality with replay: test_worker_equals_replay.py; recovery: test_worker_recovery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from leadflow.settings import Settings
from schemas.serde import decode_record
from tests.streams.harness import read_topic, start_worker, stop


def test_worker_applies_events_and_dead_letters_bad_input(
    stack: Settings, generated_events: Path, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("w") + "."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    report = asyncio.run(
        produce_file(generated_events, stack.bootstrap, "avro", topic_prefix=prefix)
    )
    assert report.sent > 1000

    async def garbage() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        await producer.send_and_wait(
            prefix + "leadflow.activities", b"\x00\x00\x00\x00\x63not avro", key=b"L-bad"
        )
        await producer.stop()

    asyncio.run(garbage())
    worker = start_worker(stack, prefix, unique_name("app"), tmp_path)
    try:
        transitions = read_topic(stack.bootstrap, prefix + "leadflow.transitions", deadline_s=60)
        dead = read_topic(stack.bootstrap, prefix + "leadflow.dlq", idle_s=1.0, deadline_s=20)
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    assert len(transitions) > 100
    stages = {decode_record(r.value)["to_stage"] for r in transitions}
    assert {"inquiry", "mql"} <= stages
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == (prefix + "leadflow.activities").encode()
    assert b"schema id 99" in headers["reason"] or b"unknown schema id" in headers["reason"]
    assert dead[0].value == b"\x00\x00\x00\x00\x63not avro"
