"""Stream throughput, side by side in one run on the same pre-loaded input topics:

    python bench/stream_throughput.py [--leads 4000] [--seed 1]

(a) raw limit: aiokafka reads every input record and Avro-decodes it (no group);
(b) Faust ceiling: a bare Faust app (the project's `leadflow://` transport) whose one agent
    only decodes and counts, first event → Nth event;
(c) `leadflow worker` end to end: N / (last − first output record timestamp); `--clock live`
    by default (throughput), `--clock event` for the backfill mode (exact replay order, slower:
    the next event waits for each forward's round trip through the internal topic).
Starts its own embedded stack on free ports and stops it at the end.
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

from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from leadflow.kafka_admin import create_topics  # noqa: E402
from leadflow.producer import produce_file  # noqa: E402
from leadflow.settings import Settings  # noqa: E402
from leadflow.stack import private_stack  # noqa: E402
from schemas.serde import decode_event  # noqa: E402
from streams.definitions_file import load_definitions  # noqa: E402
from streams.generate import generate  # noqa: E402
from streams.topics import INPUT_TOPICS, OUTPUT_TOPICS  # noqa: E402

TARGET_WORKER_EVENTS_S = 6000
TARGET_WORKER_OVER_FAUST = 0.5
OUTPUT_IDLE_S = 5.0
DEADLINE_S = 300.0

# The bare Faust app: the same App settings as streams/app.py create_app, nothing else.
BARE_FAUST_APP = '''"""Bare Faust ceiling: one agent over the input topics that only decodes and counts."""

import os
import sys
import time

import faust

from schemas.serde import decode_event
from streams import tansu, topics

BOOTSTRAP, EXPECTED, RESULT, APP_ID = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tansu.configure(20, BOOTSTRAP)
app = faust.App(
    APP_ID,
    broker=f"leadflow://{BOOTSTRAP}",
    store="memory://",
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    consumer_auto_offset_reset="earliest",
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
)
input_topic = app.topic(*topics.INPUT_TOPICS, key_type=bytes, value_type=bytes)


@app.agent(input_topic)
async def count_input_events(stream):
    count = 0
    first_at = 0.0
    async for value in stream:
        decode_event(value)
        count += 1
        if count == 1:
            first_at = time.time()
        if count == EXPECTED:
            with open(RESULT + ".part", "w") as out:
                out.write(f"{first_at} {time.time()}\\n")
            os.replace(RESULT + ".part", RESULT)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
'''


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _partitions(topics: tuple[str, ...], partitions: int) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in topics for p in range(partitions)]


def _generate(work: Path, leads: int, seed: int) -> Path:
    buffer = io.BytesIO()
    generate(load_definitions(), buffer, leads=leads, days=90, seed=seed, start=date(2026, 1, 5))
    events = work / "events.jsonl"
    events.write_bytes(buffer.getvalue())
    return events


async def _raw_consume(bootstrap: str, partitions: int, expected: int) -> float:
    """Events/s of aiokafka getmany + decode_event, first batch → last record decoded."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    got = 0
    started: float | None = None
    try:
        assigned = _partitions(INPUT_TOPICS, partitions)
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while got < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            if batch and started is None:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    decode_event(record.value or b"")
                    got += 1
    finally:
        await consumer.stop()
    return got / (time.perf_counter() - (started or time.perf_counter()))


def _bare_faust(bootstrap: str, expected: int, work: Path) -> tuple[float, float]:
    """(events/s first → Nth event, s from process start → first event) of the bare Faust app."""
    module = work / "bare_faust.py"
    module.write_text(BARE_FAUST_APP)
    result = work / "bare_faust.result"
    app_id = f"bench-bare-{uuid.uuid4().hex[:6]}"
    log = work / "bare_faust.log"
    started = time.time()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(module), bootstrap, str(expected), str(result), app_id],
            cwd=work,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while not result.exists():
            if process.poll() is not None:
                raise RuntimeError(f"bare Faust app exited: {_tail(log)}")
            if time.time() - started > DEADLINE_S:
                raise RuntimeError(f"bare Faust app did not count {expected} events in time")
            time.sleep(0.1)
        first_at, last_at = (float(x) for x in result.read_text().split())
    finally:
        _stop(process)
    return expected / (last_at - first_at), first_at - started


async def _committed(admin: AIOKafkaAdminClient, group: str, partitions: int) -> int:
    """Input events `group` has committed (explicit partitions: Tansu, INFRA.md)."""
    offsets = await admin.list_consumer_group_offsets(
        group, partitions=_partitions(INPUT_TOPICS, partitions)
    )
    return sum(max(meta.offset, 0) for meta in offsets.values())


async def _watch_worker(
    bootstrap: str, partitions: int, group: str, expected: int, worker: subprocess.Popen[bytes]
) -> tuple[dict[str, list[int]], int]:
    """(output record timestamps in ms per output topic, input events committed by `group`).

    While the worker runs only its committed offsets are probed (once a second, cheap): a
    reader of the output topics would compete with it for this machine's two cores, which the
    bare Faust run did not have to. The worker commits an input only after its outputs are
    acknowledged, so once everything is committed the outputs are read, after OUTPUT_IDLE_S for
    what internal messages (forwards, SLA ticks) still add."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    committed = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline and worker.poll() is None and committed < expected:
            await asyncio.sleep(1.0)
            committed = await _committed(admin, group, partitions)
    finally:
        await admin.close()
    await asyncio.sleep(OUTPUT_IDLE_S)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    stamps: dict[str, list[int]] = {t: [] for t in OUTPUT_TOPICS}
    try:
        assigned = _partitions(OUTPUT_TOPICS, partitions)
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while batch := await consumer.getmany(timeout_ms=1000, max_records=50_000):
            for tp, records in batch.items():
                stamps[tp.topic].extend(r.timestamp for r in records)
    finally:
        await consumer.stop()
    return stamps, committed


def _worker(
    settings: Settings, state_dir: Path, expected: int, clock: str
) -> tuple[dict[str, list[int]], float, int]:
    """(output timestamps per topic, worker start time in s, input events committed)."""
    app_id = f"bench-worker-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_PORT": str(settings.kafka_port),
        "LEADFLOW_STATE_DIR": str(state_dir),
    }
    log = state_dir / "worker.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log, "wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "leadflow", "worker", "--clock", clock, "--app-id", app_id]
            + os.environ.get("LEADFLOW_BENCH_WORKER_ARGS", "").split(),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        stamps, committed = asyncio.run(
            _watch_worker(settings.bootstrap, settings.partitions, app_id, expected, worker)
        )
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}: {_tail(log)}")
        if committed < expected:
            print(f"worker log (tail):\n{_tail(log)}")
    finally:
        _stop(worker)
    return stamps, started, committed


def _report(
    sent: int,
    raw_rate: float,
    faust: tuple[float, float],
    worker: tuple[dict[str, list[int]], float, int],
) -> None:
    faust_rate, faust_start_s = faust
    stamps, worker_started, committed = worker
    every = [ts for topic_stamps in stamps.values() for ts in topic_stamps]
    if not every:
        raise RuntimeError(f"the worker wrote no output in {DEADLINE_S:.0f} s")
    first_ms, last_ms = min(every), max(every)
    for topic, topic_stamps in stamps.items():
        if topic_stamps:
            print(
                f"  {topic}: first +{(min(topic_stamps) - first_ms) / 1000:.2f} s, last +{(max(topic_stamps) - first_ms) / 1000:.2f} s"
            )
    if committed < sent:
        print(f"worker did NOT finish in {DEADLINE_S:.0f} s: (c) counts committed events only")
    worker_rate = min(committed, sent) / ((last_ms - first_ms) / 1000)
    worker_ok = "met" if worker_rate >= TARGET_WORKER_EVENTS_S else "NOT met"
    ratio_ok = "met" if worker_rate / faust_rate >= TARGET_WORKER_OVER_FAUST else "NOT met"
    print(f"bare Faust process start → first event: {faust_start_s:.1f} s")
    print(f"worker process start → first output: {first_ms / 1000 - worker_started:.1f} s")
    print(
        f"worker: {len(every):,} output records ("
        + ", ".join(f"{t} {len(s):,}" for t, s in stamps.items())
        + f"); input committed {committed:,} of {sent:,}"
    )
    print()
    print(f"{'':<28}{'events/s':>12}   target")
    print(f"{'(a) raw aiokafka + decode':<28}{raw_rate:>12,.0f}")
    print(f"{'(b) bare Faust + decode':<28}{faust_rate:>12,.0f}")
    print(
        f"{'(c) leadflow worker':<28}{worker_rate:>12,.0f}   "
        f"≥ {TARGET_WORKER_EVENTS_S:,} ({worker_ok})"
    )
    print(
        f"{'worker / bare Faust':<28}{worker_rate / faust_rate:>12.2f}   "
        f"≥ {TARGET_WORKER_OVER_FAUST} ({ratio_ok})"
    )
    print(f"{'bare Faust / raw':<28}{faust_rate / raw_rate:>12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clock", choices=["live", "event"], default="live")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        events = _generate(work, args.leads, args.seed)
        with private_stack(work / "state") as stack:
            settings = stack.settings
            create_topics(settings.bootstrap, settings.partitions)
            report = asyncio.run(produce_file(events, settings.bootstrap, "avro"))
            sent = report.sent
            print(
                f"{sent:,} events pre-loaded in {report.elapsed_s:.1f} s "
                f"({len(report.rejected)} rejected): "
                + ", ".join(f"{t} {n:,}" for t, n in sorted(report.per_topic.items()))
            )
            raw_rate = asyncio.run(_raw_consume(settings.bootstrap, settings.partitions, sent))
            print(f"(a) raw aiokafka + decode: {raw_rate:,.0f} events/s")
            faust = _bare_faust(settings.bootstrap, sent, work)
            print(f"(b) bare Faust + decode: {faust[0]:,.0f} events/s")
            worker = _worker(settings, work / "worker-state", sent, args.clock)
            print(f"(c) leadflow worker --clock {args.clock}")
            _report(sent, raw_rate, faust, worker)


if __name__ == "__main__":
    main()
