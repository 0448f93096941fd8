"""Integration smoke tests against the real embedded servers: topics, produce/consume, ClickHouse."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from schemas.serde import decode_event
from streams.topics import topic_specs
from tests.conftest import CONSUMER_SETTINGS


async def _consume(bootstrap: str, topics: list[str], expected: int, group: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        **CONSUMER_SETTINGS,
    )
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


def test_messages_go_through_the_broker(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("t")

    async def run() -> list[Any]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for i in range(100):
                await producer.send(topic, f"m{i}".encode(), key=b"k")
            await producer.flush()
        finally:
            await producer.stop()
        return await _consume(kafka_bootstrap, [topic], 100, unique_name("g"))

    got = asyncio.run(run())
    assert [r.value for r in got] == [f"m{i}".encode() for i in range(100)]


def test_topics_create_is_idempotent(kafka_bootstrap: str) -> None:
    create_topics(kafka_bootstrap, 4)
    created, existing = create_topics(kafka_bootstrap, 4)
    assert created == []
    assert set(existing) == {s.name for s in topic_specs(4)}


def test_produce_sends_valid_lines_keyed_by_lead_and_reports_bad_ones(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("p") + "."
    source = tmp_path / "events.jsonl"
    source.write_text(
        '{"event_id":"a","event_type":"lead_created","occurred_at":"2026-01-05T09:00:00+01:00","source":"crm","lead_id":"L1"}\n'
        "this is not json\n"
        '{"event_id":"b","event_type":"touch","occurred_at":"2026-01-05T09:00:00Z","source":"web","anonymous_id":"A9","touch_type":"ad_click","channel":"email"}\n'
        '{"event_id":"c","event_type":"lead_accepted","occurred_at":"2026-01-06T09:00:00Z","source":"crm","lead_id":"L1"}\n'
    )
    report = asyncio.run(produce_file(source, kafka_bootstrap, "avro", topic_prefix=prefix))
    assert report.sent == 2
    assert [line for line, _ in report.rejected] == [2, 4]
    assert "rep_id: missing" in report.rejected[1][1]
    got = asyncio.run(
        _consume(
            kafka_bootstrap,
            [prefix + "leadflow.leads", prefix + "leadflow.touches"],
            2,
            unique_name("g"),
        )
    )
    by_key = {r.key: decode_event(r.value) for r in got}
    assert by_key[b"L1"]["event_id"] == "a" and by_key[b"A9"]["event_id"] == "b"


def test_produce_cli_reports_a_down_broker_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "e.jsonl"
    source.write_text("{}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "leadflow",
            "produce",
            "--input",
            str(source),
            "--bootstrap",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no Kafka broker answers")
    assert "Traceback" not in result.stderr


def test_clickhouse_write_and_read(clickhouse: Any) -> None:
    clickhouse.execute(
        "CREATE TABLE t (lead_id String, n UInt32) ENGINE = MergeTree() ORDER BY lead_id"
    )
    clickhouse.execute("INSERT INTO t (lead_id, n) VALUES", [("L1", 1), ("L2", 2)])
    assert clickhouse.execute(
        "SELECT sum(n) FROM t WHERE lead_id IN %(ids)s", {"ids": ("L1", "L2")}
    ) == [(3,)]
