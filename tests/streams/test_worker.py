"""`leadflow worker` against the real broker: it starts, applies events through the core,
writes decodable outputs, and dead-letters bad input with headers instead of crashing.

Equality with replay: test_worker_equals_replay.py; recovery: test_worker_recovery.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from leadflow.settings import Settings
from schemas.serde import decode_record
from streams import topics
from streams.topics import input_formats
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


def test_input_formats_are_chosen_per_topic() -> None:
    assert input_formats("json") == dict.fromkeys(topics.INPUT_TOPICS, "json")
    assert input_formats("avro, touches=json,leadflow.leads=json") == {
        topics.TOUCHES: "json",
        topics.ACTIVITIES: "avro",
        topics.LEADS: "json",
    }
    for wrong in ("xml", "touches=json", "avro,calls=json", "avro,touches=xml", ""):
        with pytest.raises(ValueError, match="avro|json"):
            input_formats(wrong)


def test_a_wrong_input_format_is_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leadflow", "worker", "--input-format", "avro,calls=json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--input-format 'calls=json': expected <topic>=avro|json" in done.stderr
    assert "Traceback" not in done.stderr


def test_each_input_topic_is_decoded_in_its_own_format(
    stack: Settings, generated_events: Path, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Everything published as JSON; the worker reads leads as Avro: only leads records are
    dead-lettered, each with its reason, and the JSON topics are applied."""
    prefix = unique_name("fmt") + "."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    asyncio.run(produce_file(generated_events, stack.bootstrap, "json", topic_prefix=prefix))
    leads = read_topic(stack.bootstrap, prefix + topics.LEADS, idle_s=1.0)
    worker = start_worker(
        stack, prefix, unique_name("app"), tmp_path, "--input-format", "json,leads=avro"
    )
    try:
        dead = read_topic(stack.bootstrap, prefix + topics.DLQ, idle_s=4.0, deadline_s=60)
        states = read_topic(stack.bootstrap, prefix + topics.LEAD_STATE, idle_s=1.0)
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    assert {dict(r.headers)["source_topic"] for r in dead} == {(prefix + topics.LEADS).encode()}
    assert sorted(r.value for r in dead) == sorted(r.value for r in leads)
    assert {dict(r.headers)["reason"] for r in dead} == {
        b"bad magic byte 123 (not the Confluent wire format)"  # a JSON object starts with '{'
    }
    assert states, "touches and activities (JSON) were applied"
