"""`leadflow worker` against the real broker: it starts, applies events through the core,
writes decodable outputs, and dead-letters bad input with headers instead of crashing.

Equality with replay: test_worker_equals_replay.py; recovery: test_worker_recovery.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from leadflow.settings import Settings
from schemas.serde import decode_record


async def _drain(bootstrap: str, topic: str, idle_s: float = 3.0, deadline_s: float = 60.0) -> list:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100
    )
    await consumer.start()
    got: list = []  # type: ignore[type-arg]
    last = time.monotonic()
    end = time.monotonic() + deadline_s
    try:
        while time.monotonic() < end and (not got or time.monotonic() - last < idle_s):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                got.extend(records)
                last = time.monotonic()
    finally:
        await consumer.stop()
    return got


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
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_PORT": str(stack.kafka_port),
        "LEADFLOW_STATE_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leadflow",
            "worker",
            "--clock",
            "event",
            "--topic-prefix",
            prefix,
            "--app-id",
            unique_name("app"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        transitions = asyncio.run(_drain(stack.bootstrap, prefix + "leadflow.transitions"))
        dead = asyncio.run(
            _drain(stack.bootstrap, prefix + "leadflow.dlq", idle_s=1.0, deadline_s=20)
        )
        assert worker.poll() is None, "the worker died"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    assert len(transitions) > 100
    stages = {decode_record(r.value)["to_stage"] for r in transitions}
    assert {"inquiry", "mql"} <= stages
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == (prefix + "leadflow.activities").encode()
    assert b"schema id 99" in headers["reason"] or b"unknown schema id" in headers["reason"]
    assert dead[0].value == b"\x00\x00\x00\x00\x63not avro"
