"""ClickHouse sink benchmark, side by side in one run on the same rows:

    python bench/sink_bench.py [--leads 20000]

(a) raw clickhouse-driver inserts of the mapped rows in large batches;
(b) raw aiokafka consume + Avro decode of the same pre-loaded output topics;
(c) the sink: topics → rows in ClickHouse (decode, map, batch, insert, commit).
Starts its own embedded stack on free ports and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from leadflow.stack import EmbeddedStack, private_stack  # noqa: E402
from schemas.serde import decode_record, encode_record  # noqa: E402
from sinks.clickhouse import tables  # noqa: E402
from sinks.clickhouse.backend import ServerBackend  # noqa: E402
from sinks.clickhouse.migrate import migrate  # noqa: E402
from sinks.clickhouse.rows import COLUMNS, MAPPERS  # noqa: E402
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig, make_consumer  # noqa: E402
from sinks.clickhouse.writer import REPLAY_FILES  # noqa: E402
from streams.definitions_file import load_definitions  # noqa: E402
from streams.generate import generate  # noqa: E402
from streams.replay import replay_file  # noqa: E402

KIND = {
    tables.TRANSITIONS: "transition",
    tables.SLA: "sla",
    tables.ATTRIBUTION: "attribution",
    tables.LEAD_STATE: "lead_state",
    tables.DEAD_LETTERS: "dead_letter",
}


def _records(leads: int, work: Path) -> dict[str, list[dict[str, object]]]:
    events = work / "events.jsonl"
    with open(events, "wb") as out:
        generate(load_definitions(), out, leads=leads, days=180, seed=3, start=date(2026, 1, 5))
    replay_file(events, work / "out", load_definitions())
    return {
        table: [orjson.loads(line) for line in (work / "out" / name).read_bytes().splitlines()]
        for name, table in REPLAY_FILES.items()
    }


async def _preload(
    bootstrap: str, topic_of_table: dict[str, str], records: dict[str, list[dict[str, object]]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5, max_batch_size=262144
    )
    await producer.start()
    try:
        pending = []
        for table, rows in records.items():
            for record in rows:
                pending.append(
                    await producer.send(topic_of_table[table], encode_record(KIND[table], record))
                )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _raw_consume(bootstrap: str, topics: list[str], expected: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    got = 0
    started = None
    try:
        while got < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            if batch and started is None:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    decode_record(record.value)
                    got += 1
    finally:
        await consumer.stop()
    return got / (time.perf_counter() - (started or time.perf_counter()))


async def _sink(
    backend: ServerBackend, bootstrap: str, table_of_topic: dict[str, str], expected: int
) -> float:
    consumer = make_consumer(bootstrap, list(table_of_topic), f"sink-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    sink = ClickHouseSink(
        backend, consumer, table_of_topic, SinkConfig(batch_rows=100_000, linger_s=1.0)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        while sink.rows_written == 0 and not sink._pending:
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        while sink.rows_written < expected:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await task
        await consumer.stop()
    return expected / elapsed


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _outage(
    stack: EmbeddedStack,
    backend: ServerBackend,
    bootstrap: str,
    records: dict[str, list[dict[str, object]]],
    batch_rows: int,
) -> tuple[int, float, float, float]:
    """Stop ClickHouse, pour every row into fresh topics, and watch the sink hold them;
    returns (max buffered rows, RSS before, max RSS during, seconds to drain after restart)."""
    topic_of_table = {t: f"outage-{t}-{uuid.uuid4().hex[:6]}" for t in records}
    consumer = make_consumer(
        bootstrap, list(topic_of_table.values()), f"outage-{uuid.uuid4().hex[:6]}"
    )
    await consumer.start()
    sink = ClickHouseSink(
        backend,
        consumer,
        {v: k for k, v in topic_of_table.items()},
        SinkConfig(batch_rows=batch_rows, linger_s=0.5, retry_max_s=1.0),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    stack.stop_clickhouse()
    before = _rss_mb()
    await _preload(bootstrap, topic_of_table, records)
    peak_rows, peak_rss = 0, before
    for _ in range(50):
        await asyncio.sleep(0.2)
        peak_rows = max(peak_rows, len(sink._pending))
        peak_rss = max(peak_rss, _rss_mb())
    await asyncio.to_thread(stack.up)
    started = time.perf_counter()
    total = sum(len(v) for v in records.values())
    while sink.rows_written < total:
        await asyncio.sleep(0.05)
    drained = time.perf_counter() - started
    stop.set()
    await task
    await consumer.stop()
    return peak_rows, before, peak_rss, drained


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with private_stack(work / "stack") as stack:
            settings = stack.settings
            records = _records(args.leads, work)
            total = sum(len(v) for v in records.values())
            raw_db = ServerBackend("127.0.0.1", settings.clickhouse_port, "bench_raw")
            raw_db.create_database()
            migrate(raw_db)
            rows = {t: [MAPPERS[t](r) for r in recs] for t, recs in records.items()}
            started = time.perf_counter()
            for table, table_rows in rows.items():
                for i in range(0, len(table_rows), 100_000):
                    raw_db.insert(table, COLUMNS[table], table_rows[i : i + 100_000])
            insert_rate = total / (time.perf_counter() - started)
            topic_of_table = {t: f"bench-{t}-{uuid.uuid4().hex[:6]}" for t in records}
            asyncio.run(_preload(settings.bootstrap, topic_of_table, records))
            consume_rate = asyncio.run(
                _raw_consume(settings.bootstrap, list(topic_of_table.values()), total)
            )
            sink_db = ServerBackend("127.0.0.1", settings.clickhouse_port, "bench_sink")
            sink_db.create_database()
            migrate(sink_db)
            sink_rate = asyncio.run(
                _sink(sink_db, settings.bootstrap, {v: k for k, v in topic_of_table.items()}, total)
            )
            outage_db = ServerBackend("127.0.0.1", settings.clickhouse_port, "bench_outage")
            outage_db.create_database()
            migrate(outage_db)
            held, rss_before, rss_peak, drained = asyncio.run(
                _outage(stack, outage_db, settings.bootstrap, records, batch_rows=10_000)
            )
    floor = min(insert_rate, consume_rate)
    print(f"rows: {total:,} ({', '.join(f'{t} {len(r):,}' for t, r in records.items())})")
    print(f"(a) raw clickhouse-driver insert, 100k batches : {insert_rate:>10,.0f} rows/s")
    print(f"(b) raw aiokafka consume + Avro decode         : {consume_rate:>10,.0f} rows/s")
    print(f"(c) leadflow sink, topics → ClickHouse         : {sink_rate:>10,.0f} rows/s")
    print(
        f"ratio sink / min(a, b)                         : {sink_rate / floor:.2f}  (target ≥ 0.4)"
    )
    print(
        f"ClickHouse down 10 s while {total:,} rows arrive: at most {held:,} rows held "
        f"(batch 10,000), RSS {rss_before:,.0f} → {rss_peak:,.0f} MB; all rows in ClickHouse "
        f"{drained:.1f} s after it came back"
    )
    print(
        f"peak RSS of this process                       : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
    )


if __name__ == "__main__":
    main()
