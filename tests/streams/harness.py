"""Running `leadflow worker` processes against the real broker, and reading what they wrote."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from leadflow.settings import Settings
from schemas.serde import decode_record
from streams import table_codec, topics
from streams.pipeline import table_digest


def start_worker(
    stack: Settings, prefix: str, app_id: str, state_dir: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """`leadflow worker --clock event` on the prefixed topics, in its own process group."""
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_PORT": str(stack.kafka_port),
        "LEADFLOW_STATE_DIR": str(state_dir),
    }
    command = [sys.executable, "-m", "leadflow", "worker", "--clock", "event"]
    command += ["--topic-prefix", prefix, "--app-id", app_id, "--log-level", "info"]
    if "--metrics-port" not in extra:
        command += ["--metrics-port", "0"]  # several workers run at once
    command += extra
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"worker-{app_id}-{time.monotonic_ns()}.log"  # kept for a failing test
    with open(log, "wb") as stderr:
        worker = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    worker.log = log  # type: ignore[attr-defined]
    return worker


def stop(worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the worker's process group and wait for it to exit."""
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
    worker.wait(timeout=60)


async def _read(bootstrap: str, topic: str, idle_s: float, deadline_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100
    )
    await consumer.start()
    got: list[Any] = []
    last = time.monotonic()
    end = last + deadline_s
    try:
        while time.monotonic() < end and (not got or time.monotonic() - last < idle_s):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                got.extend(records)
                last = time.monotonic()
    finally:
        await consumer.stop()
    return got


def read_topic(
    bootstrap: str, topic: str, idle_s: float = 3.0, deadline_s: float = 90.0
) -> list[Any]:
    """Every record of `topic`, read until nothing new came for `idle_s`."""
    return asyncio.run(_read(bootstrap, topic, idle_s, deadline_s))


def wait_until_quiet(
    bootstrap: str, topic: str, quiet_s: float = 4.0, deadline_s: float = 120.0
) -> int:
    """Wait until `topic` has records and no new one arrived for `quiet_s`; returns the count."""
    return len(read_topic(bootstrap, topic, idle_s=quiet_s, deadline_s=deadline_s))


async def _until(bootstrap: str, topic: str, count: int, deadline_s: float) -> int:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20
    )
    await consumer.start()
    distinct: set[bytes] = set()  # a re-delivered record is byte for byte the same
    end = time.monotonic() + deadline_s
    try:
        while len(distinct) < count and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=20)
            distinct.update(r.value for records in batch.values() for r in records)
    finally:
        await consumer.stop()
    return len(distinct)


def wait_for_records(bootstrap: str, topic: str, count: int, deadline_s: float = 60.0) -> int:
    """Return as soon as `topic` holds at least `count` distinct records (or at the deadline)."""
    return asyncio.run(_until(bootstrap, topic, count, deadline_s))


def outputs(bootstrap: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """The decoded records of every output topic."""
    return {
        topic: [decode_record(r.value) for r in read_topic(bootstrap, prefix + topic, idle_s=2.0)]
        for topic in topics.OUTPUT_TOPICS
    }


def changelog_digests(bootstrap: str, app_id: str, tables: list[str]) -> dict[str, str]:
    """What a complete recovery of each table must give (streams.pipeline.table_digest)."""
    digests = {}
    for table in tables:
        latest: dict[bytes, bytes | None] = {}
        for record in read_topic(bootstrap, f"{app_id}-{table}-changelog", idle_s=2.0):
            latest[record.key] = record.value
        digests[table] = table_digest(latest.items())
    return digests


def recovered_digests(log: Path) -> dict[str, str]:
    """The `recovered <table>: N keys, digest D` lines a worker logged at start."""
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if "recovered " in line:
            table, _, digest = line.split("recovered ", 1)[1].partition(": ")
            found[table] = digest.strip()
    return found


def table_values(bootstrap: str, app_id: str, table: str) -> dict[bytes, Any]:
    """A table's values as its changelog holds them (latest per key; deleted keys left out)."""
    latest: dict[bytes, bytes | None] = {}
    for record in read_topic(bootstrap, f"{app_id}-{table}-changelog", idle_s=2.0):
        latest[record.key] = record.value
    return {key: table_codec.loads(value) for key, value in latest.items() if value is not None}


def start_sink(
    stack: Settings, prefix: str, database: str, log_dir: Path, batch_rows: int | None = 500
) -> subprocess.Popen[bytes]:
    """`leadflow sink` on the prefixed output topics into `database`, in its own process group
    (`batch_rows` None: the sink's default)."""
    from leadflow.stack import free_port

    env = {
        **os.environ,
        "LEADFLOW_KAFKA_PORT": str(stack.kafka_port),
        "LEADFLOW_CLICKHOUSE_PORT": str(stack.clickhouse_port),
        "LEADFLOW_CLICKHOUSE_DATABASE": database,
        "LEADFLOW_METRICS_PORT": str(free_port()),
    }
    command = [sys.executable, "-m", "leadflow", "sink", "--topic-prefix", prefix]
    command += ["--group", prefix + "sink", "--linger-s", "0.2"]
    if batch_rows is not None:
        command += ["--batch-rows", str(batch_rows)]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"sink-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        sink = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True
        )
    sink.log = log  # type: ignore[attr-defined]
    return sink
