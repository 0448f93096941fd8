"""The sink against the real broker and ClickHouse: everything arrives once, bad rows dead-letter,
and a ClickHouse outage holds the batch (bounded) until the server is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from leadflow.settings import Settings
from leadflow.stack import EmbeddedStack, free_port
from schemas.serde import encode_record
from sinks.clickhouse import tables
from sinks.clickhouse.backend import ServerBackend
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.rows import printable
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig, make_consumer
from sinks.clickhouse.writer import REPLAY_FILES

KIND_OF_TABLE = {
    tables.TRANSITIONS: "transition",
    tables.SLA: "sla",
    tables.ATTRIBUTION: "attribution",
    tables.LEAD_STATE: "lead_state",
    tables.DEAD_LETTERS: "dead_letter",
}


async def _publish(
    bootstrap: str, topic_of_table: dict[str, str], replay_dir: Path, extra: list[tuple[str, bytes]]
) -> int:
    import orjson

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for name, table in REPLAY_FILES.items():
            for line in (replay_dir / name).read_bytes().splitlines():
                record = orjson.loads(line)
                if table == tables.DEAD_LETTERS:  # as the worker writes them: bytes + headers
                    await producer.send(
                        topic_of_table[table],
                        record["raw"].encode(),
                        headers=_worker_headers(record["reason"], "replay", 0, record["line"]),
                    )
                else:
                    await producer.send(
                        topic_of_table[table],
                        encode_record(KIND_OF_TABLE[table], record),
                        key=str(record.get("lead_id") or "").encode(),
                    )
                sent += 1
        for topic, value in extra:
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _worker_headers(
    reason: str, topic: str, partition: int, offset: int, error_class: str = "InvalidEvent"
) -> list[tuple[str, bytes]]:
    """The headers streams.pipeline puts on a dead-letter record."""
    return [
        ("reason", reason.encode()),
        ("error_class", error_class.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


async def _run_until(sink: ClickHouseSink, done: Callable[[], bool], timeout_s: float = 90) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    async with asyncio.timeout(timeout_s):
        while not done():
            await asyncio.sleep(0.2)
    stop.set()
    await task


def _counts(backend: ServerBackend) -> dict[str, int]:
    return {t: backend.execute(f"SELECT count() FROM {t} FINAL")[0][0] for t in KIND_OF_TABLE}


def test_sink_delivers_every_record_once_and_dead_letters_bad_ones(
    stack: Settings,
    replay_dir: Path,
    unique_name: Callable[[str], str],
    server_backend: ServerBackend,
) -> None:
    topic_of_table = {t: unique_name(t) for t in KIND_OF_TABLE}
    table_of_topic = {v: k for k, v in topic_of_table.items()}
    expected = {t: len((replay_dir / n).read_bytes().splitlines()) for n, t in REPLAY_FILES.items()}
    garbage = [(topic_of_table[tables.TRANSITIONS], b"\x00\x00\x00\x00\x10garbage")]

    async def scenario() -> ClickHouseSink:
        await _publish(stack.bootstrap, topic_of_table, replay_dir, garbage)
        consumer = make_consumer(stack.bootstrap, list(table_of_topic), unique_name("g"))
        await consumer.start()
        try:
            sink = ClickHouseSink(
                server_backend, consumer, table_of_topic, SinkConfig(batch_rows=2000, linger_s=0.3)
            )
            total = sum(expected.values()) + 1
            await _run_until(sink, lambda: sink.rows_written >= total)
        finally:
            await consumer.stop()
        return sink

    asyncio.run(scenario())
    counts = _counts(server_backend)
    assert counts[tables.DEAD_LETTERS] == expected[tables.DEAD_LETTERS] + 1
    for table in (tables.TRANSITIONS, tables.SLA, tables.ATTRIBUTION):
        assert counts[table] == expected[table], table
    reason = server_backend.execute(
        "SELECT reason FROM dead_letters WHERE source_topic = %(t)s",
        {"t": topic_of_table[tables.TRANSITIONS]},
    )
    assert reason and "transitions" in reason[0][0]


def test_clickhouse_outage_holds_the_batch_and_everything_arrives(
    stack: Settings, replay_dir: Path, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    own = Settings(
        state_dir=tmp_path / "ch",
        kafka_port=free_port(),
        clickhouse_port=free_port(),
        clickhouse_http_port=free_port(),
    )
    private = EmbeddedStack(own)
    private.up()
    try:
        backend = ServerBackend(own.clickhouse_host, own.clickhouse_port, "leadflow")
        backend.create_database()
        migrate(backend)
        topic_of_table = {t: unique_name(t) for t in KIND_OF_TABLE}
        table_of_topic = {v: k for k, v in topic_of_table.items()}
        expected = sum(len((replay_dir / n).read_bytes().splitlines()) for n in REPLAY_FILES)

        async def scenario() -> None:
            consumer = make_consumer(stack.bootstrap, list(table_of_topic), unique_name("g"))
            await consumer.start()
            try:
                sink = ClickHouseSink(
                    backend,
                    consumer,
                    table_of_topic,
                    SinkConfig(batch_rows=500, linger_s=0.2, retry_initial_s=0.1, retry_max_s=0.5),
                )
                stop = asyncio.Event()
                task = asyncio.create_task(sink.run(stop))
                private.stop_clickhouse()
                await _publish(stack.bootstrap, topic_of_table, replay_dir, [])
                await asyncio.sleep(3)
                assert sink.rows_written == 0
                assert len(sink._pending) <= 500  # bounded: no fetching while the insert retries
                private.up()
                async with asyncio.timeout(90):
                    while sink.rows_written < expected:
                        await asyncio.sleep(0.2)
                stop.set()
                await task
            finally:
                await consumer.stop()

        asyncio.run(scenario())
        assert sum(_counts(backend).values()) == expected
    finally:
        private.down()


def test_a_row_clickhouse_refuses_goes_to_dead_letters_and_the_rest_arrives(
    server_backend: ServerBackend,
) -> None:
    good = {
        "record_id": "r-good",
        "lead_id": "L1",
        "from_stage": None,
        "to_stage": "inquiry",
        "at": "2026-01-05T09:00:00Z",
        "event_id": "e1",
        "skipped_stages": [],
        "episode": 1,
        "reason": None,
        "owner_id": None,
        "team_id": "emea",
        "definitions_version": "v",
    }
    bad = {**good, "record_id": "r-bad", "episode": 70_000}  # episode is UInt16: out of range
    sink = ClickHouseSink(server_backend, None, {"t": tables.TRANSITIONS})  # type: ignore[arg-type]
    import orjson

    sink.add("t", 0, 1, orjson.dumps(good))
    sink.add("t", 0, 2, orjson.dumps(bad))
    asyncio.run(sink.flush())
    assert server_backend.execute("SELECT record_id FROM transitions") == [("r-good",)]
    letters = server_backend.execute("SELECT reason, raw FROM dead_letters")
    assert len(letters) == 1
    assert "refused" in letters[0][0] and "r-bad" in letters[0][1]


def _transition(record_id: str, **changes: object) -> dict[str, object]:
    return {
        "record_id": record_id,
        "lead_id": "L1",
        "from_stage": None,
        "to_stage": "inquiry",
        "at": "2026-01-05T09:00:00Z",
        "event_id": "e-" + record_id,
        "skipped_stages": [],
        "episode": 1,
        "reason": None,
        "owner_id": None,
        "team_id": "emea",
        "definitions_version": "v",
        **changes,
    }


def test_poison_never_stops_the_sink_and_each_poison_record_is_one_dead_letter(
    stack: Settings, unique_name: Callable[[str], str], server_backend: ServerBackend
) -> None:
    """Given good transitions with poison between them on the transitions topic and records of
    every shape on the dead-letter topic; when the sink runs; then it is still running, the good
    rows are in, and every poison record is in dead_letters exactly once."""
    import orjson

    transitions, dlq = unique_name("transitions"), unique_name("dlq")
    table_of_topic = {transitions: tables.TRANSITIONS, dlq: tables.DEAD_LETTERS}
    good = [orjson.dumps(_transition(f"good-{i}")) for i in range(6)]
    poison_transitions = [
        b"\x00\x00\x00\x00\x10garbage",  # framed, unknown schema
        orjson.dumps(_transition("none-in-string", event_id=None, definitions_version=None)),
        orjson.dumps(_transition("wrong-type", episode="seven")),  # client-side TypeError
        orjson.dumps(_transition("out-of-range", episode=70_000)),  # UInt16
        orjson.dumps(_transition("bad-time", at="yesterday")),
        b"[1, 2, 3]",
        b"{not json",
        b"",
    ]
    poison_dlq: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (b'{"event_type": "touch"}', _worker_headers("event: missing event_id", "up", 1, 7)),
        (b"\xff\xfe\x00binary", _worker_headers("bad magic byte 255", "up", 2, 8, "SchemaError")),
        (b"no headers at all", []),
        (b"x" * 300_000, _worker_headers("event: larger than 65536 bytes", "up", 0, 9)),
        (b"odd headers", [("reason", b"r"), ("source_topic", b"up"), ("source_offset", b"x")]),
    ]

    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for index, value in enumerate(poison_transitions):
                if index < len(good):
                    await producer.send(transitions, good[index])
                await producer.send(transitions, value)
            for value, headers in poison_dlq:
                await producer.send(dlq, value, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = make_consumer(stack.bootstrap, list(table_of_topic), unique_name("g"))
        await consumer.start()
        try:
            sink = ClickHouseSink(
                server_backend, consumer, table_of_topic, SinkConfig(batch_rows=50, linger_s=0.2)
            )
            stop = asyncio.Event()
            task = asyncio.create_task(sink.run(stop))
            want = 6 + len(poison_transitions) + len(poison_dlq)
            async with asyncio.timeout(60):
                while sink.rows_written < want:
                    await asyncio.sleep(0.2)
                    assert not task.done(), task.exception()
            assert not task.done(), "the sink stopped on data"
            stop.set()
            await task
        finally:
            await consumer.stop()

    asyncio.run(scenario())
    good_ids = {r for (r,) in server_backend.execute("SELECT record_id FROM transitions FINAL")}
    assert good_ids == {f"good-{i}" for i in range(6)}
    letters = server_backend.execute(
        "SELECT source_topic, source_partition, source_offset, count(), any(raw) "
        "FROM dead_letters GROUP BY source_topic, source_partition, source_offset"
    )
    assert all(copies == 1 for *_, copies, _ in letters), letters
    raws: dict[str | None, list[str]] = {}
    for topic, _, _, _, raw in letters:
        raws.setdefault(topic, []).append(raw)
    assert sorted(raws.pop(transitions)) == sorted(printable(v) for v in poison_transitions)
    assert sorted(raws.pop("up")) == sorted(printable(v) for v, h in poison_dlq if h)
    assert raws.pop(dlq) == ["no headers at all"]  # located in the dead-letter topic itself
    assert raws == {}


def test_a_dead_letter_row_keeps_the_workers_story(server_backend: ServerBackend) -> None:
    """Given a dead-letter record as the worker writes it (original bytes + headers); when the
    sink stores it; then the row has the upstream topic, partition, offset, reason, error class
    and the bytes (text as text, binary as base64)."""
    import base64

    sink = ClickHouseSink(server_backend, None, {"dlq": tables.DEAD_LETTERS})  # type: ignore[arg-type]
    headers = _worker_headers("event: occurred_at: not ISO-8601", "leadflow.touches", 3, 41)
    sink.add("dlq", 0, 5, b'{"event_type": "touch", "occurred_at": "soon"}', headers, 1767600000000)
    binary = b"\x00\x00\x01\x86\xa0\x02\xff"
    sink.add(
        "dlq",
        0,
        6,
        binary,
        _worker_headers("schema id 100000 unknown", "leadflow.leads", 1, 2, "SchemaError"),
    )
    asyncio.run(sink.flush())
    rows = server_backend.execute(
        "SELECT source_topic, source_partition, source_offset, reason, error_class, raw, "
        "toString(at) FROM dead_letters ORDER BY source_topic DESC"
    )
    assert rows == [
        (
            "leadflow.touches",
            3,
            41,
            "event: occurred_at: not ISO-8601",
            "InvalidEvent",
            '{"event_type": "touch", "occurred_at": "soon"}',
            "2026-01-05 08:00:00",
        ),
        (
            "leadflow.leads",
            1,
            2,
            "schema id 100000 unknown",
            "SchemaError",
            "base64:" + base64.b64encode(binary).decode(),
            None,
        ),
    ]
