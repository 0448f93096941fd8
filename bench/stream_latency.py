"""Worker start-up and latency: produce → lead-state output at a steady rate, on a private stack.

    python bench/stream_latency.py [--rate 1000] [--seconds 10]

Starts its own embedded stack on free ports, runs `leadflow worker` (live clock) as a
subprocess, measures process start → first output, then publishes generated events at a
steady rate and reports p50/p99 of (lead-state output received − input sent); then kills the
worker (SIGKILL), starts another and reports restart → first output.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from leadflow.kafka_admin import create_topics  # noqa: E402
from leadflow.producer import encode_line  # noqa: E402
from leadflow.stack import private_stack  # noqa: E402
from streams.definitions_file import load_definitions  # noqa: E402
from streams.generate import generate  # noqa: E402

WORKER_ARGS: list[str] = os.environ.get("LEADFLOW_BENCH_WORKER_ARGS", "").split()


async def _run(
    bootstrap: str, lines: list[bytes], rate: int, seconds: int, worker_started: float
) -> None:
    consumer = AIOKafkaConsumer(
        "leadflow.lead-state",
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=20,
        auto_offset_reset="latest",
        group_id=f"lat-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    await producer.start()
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    first_output: list[float] = []

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    if not first_output:
                        first_output.append(now)
                    origin = sent_at.get(record.key or b"")
                    if origin is not None:
                        latencies.append(now - origin)

    reader = asyncio.create_task(read())
    # warm-up: new leads until one comes out, which tells when the worker is consuming
    warm_up = iter(line for line in lines if b'"lead_created"' in line)
    while not first_output:
        topic, key, value, _ = encode_line(next(warm_up), "avro")
        sent_at[key] = time.time()
        await producer.send_and_wait(topic, value, key=key)
        await asyncio.sleep(0.5)
    print(f"worker process start → first output: {first_output[0] - worker_started:.1f} s")
    latencies.clear()
    started = time.perf_counter()
    count = 0
    for line in lines:
        if time.perf_counter() - started > seconds:
            break
        topic, key, value, _ = encode_line(line, "avro")
        sent_at[key] = time.time()
        await producer.send(topic, value, key=key)
        count += 1
        ahead = count / rate - (time.perf_counter() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await producer.flush()
    await asyncio.sleep(3)
    reader.cancel()
    await producer.stop()
    await consumer.stop()
    latencies.sort()
    if latencies:
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(
            f"{count:,} events at {rate}/s: {len(latencies):,} outputs, latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        )


async def _first_output_after_restart(
    bootstrap: str, lines: list[bytes], restarted: float
) -> float:
    """New leads every 0.5 s until one of them comes out; seconds since the restart."""
    consumer = AIOKafkaConsumer(
        "leadflow.lead-state",
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=20,
        auto_offset_reset="latest",
        group_id=f"rst-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    sent: set[bytes] = set()
    try:
        for line in lines:
            topic, key, value, _ = encode_line(line, "avro")
            sent.add(key)
            await producer.send_and_wait(topic, value, key=key)
            batch = await consumer.getmany(timeout_ms=500)
            if any(r.key in sent for records in batch.values() for r in records):
                return time.time() - restarted
        return float("nan")
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    buffer = io.BytesIO()
    generate(load_definitions(), buffer, leads=3000, days=30, seed=9, start=date(2026, 1, 5))
    lines = [line for line in buffer.getvalue().splitlines() if b'"lead_id"' in line]
    with tempfile.TemporaryDirectory() as tmp:
        with private_stack(Path(tmp)) as stack:
            settings = stack.settings
            create_topics(settings.bootstrap, settings.partitions)
            env = {
                **os.environ,
                "LEADFLOW_KAFKA_PORT": str(settings.kafka_port),
                "LEADFLOW_STATE_DIR": tmp,
            }
            command = [sys.executable, "-m", "leadflow", "worker", *WORKER_ARGS]
            started = time.time()
            worker = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                asyncio.run(_run(settings.bootstrap, lines, args.rate, args.seconds, started))
            finally:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
            restarted = time.time()
            worker = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                fresh = [line for line in lines if b'"lead_created"' in line][-200:]
                took = asyncio.run(
                    _first_output_after_restart(settings.bootstrap, fresh, restarted)
                )
                print(f"restart after SIGKILL → first output: {took:.1f} s")
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=30)


if __name__ == "__main__":
    main()
