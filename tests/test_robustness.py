"""Worker + sink + ClickHouse end to end on the real embedded stack, as upstream systems use it:
poison published by an independent client (confluent-kafka, i.e. librdkafka), broker data loss
(a restart of the embedded broker under running processes), and stops with parts gone."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from clickhouse_driver import Client

from leadflow.kafka_admin import create_topics
from leadflow.settings import Settings
from leadflow.stack import EmbeddedStack, private_stack
from schemas.serde import encode_event
from sinks.clickhouse.rows import printable
from sinks.clickhouse.sink import TABLE_OF_TOPIC
from streams import topics
from streams.dataloss import BrokerProbe
from tests.streams.harness import read_topic, start_sink, start_worker, stop

confluent_kafka = pytest.importorskip("confluent_kafka")

STOP_WITHIN_S = 10.0


def _sigterm_seconds(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM to the process group; seconds until it exited (fails past 30 s)."""
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    return time.monotonic() - started


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.3)


def _publish(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
    """Publish (topic, key, value) with librdkafka, as an upstream system would: no leadflow
    headers. Returns the delivered messages (topic, partition, offset), one per record, in the
    order of `records`.

    Delivery reports arrive in the order librdkafka's produce requests are answered (per
    partition, one request per topic partition and linger), not in the order of `produce`
    calls: each record's report is put at its own index, never appended."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 5}
    )
    delivered: list[Any] = [None] * len(records)
    errors: list[Any] = []

    def on_delivery(index: int, error: Any, message: Any) -> None:
        if error is not None:
            errors.append(error)
        delivered[index] = message

    for index, (topic, key, value) in enumerate(records):
        producer.produce(
            topic, value=value, key=key, on_delivery=functools.partial(on_delivery, index)
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    assert all(m is not None for m in delivered)
    return delivered


def _event(event_id: str, event_type: str, lead_id: str, at: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": at,
        "source": "crm",
        "lead_id": lead_id,
        **extra,
    }


def _good_events(lead: str) -> list[tuple[str, dict[str, Any]]]:
    """(short topic, event): a lead created, a hand-raiser touch (MQL), accepted by sales."""
    return [
        (
            "leads",
            _event(
                f"{lead}-c",
                "lead_created",
                lead,
                "2026-01-05T09:00:00+00:00",
                owner_id="rep-1",
                team_id=None,
                attributes={},
            ),
        ),
        (
            "touches",
            _event(
                f"{lead}-t",
                "touch",
                lead,
                "2026-01-05T09:05:00+00:00",
                touch_type="demo_request",
                channel="direct",
                campaign_id=None,
            ),
        ),
        (
            "activities",
            _event(f"{lead}-a", "lead_accepted", lead, "2026-01-05T09:30:00+00:00", rep_id="rep-1"),
        ),
    ]


FORMATS = {"touches": "json", "leads": "json", "activities": "avro"}


def _encode(short: str, event: dict[str, Any]) -> bytes:
    if FORMATS[short] == "json":
        return json.dumps(event).encode()
    return encode_event(event)


def _poison(short: str) -> list[tuple[str, bytes | None, bytes]]:
    """(kind, key, value): what upstream systems get wrong, in the topic's own terms."""
    rng = random.Random(short)
    valid = _event(
        "p-valid",
        "touch",
        "P1",
        "2026-01-05T10:00:00+00:00",
        touch_type="ad_click",
        channel="direct",
        campaign_id=None,
    )
    avro = encode_event(valid)
    items: list[tuple[str, bytes | None, bytes]] = [
        ("random bytes", b"k", bytes(rng.getrandbits(8) for _ in range(80))),
        ("truncated avro", b"k", avro[: len(avro) // 2]),
        ("unknown schema id", b"k", b"\x00" + (987_654).to_bytes(4, "big") + avro[5:]),
        ("missing fields", b"k", b'{"event_type": "touch"}'),
        (
            "mistyped field",
            b"k",
            json.dumps({**valid, "event_id": "p-typed", "occurred_at": 1767600000}).encode(),
        ),
        (
            "unknown event type",
            b"k",
            json.dumps({**valid, "event_id": "p-u", "event_type": "teleport"}).encode(),
        ),
        (
            "unparseable time",
            b"k",
            json.dumps({**valid, "event_id": "p-t", "occurred_at": "next tuesday"}).encode(),
        ),
        ("~900 KB value", b"k", b'{"event_type": "touch", "note": "' + b"x" * 900_000 + b'"}'),
        ("empty value", b"k", b""),
        ("no key", None, b'{"event_type": "touch", "lead_id": "P1"}'),
    ]
    if FORMATS[short] == "avro":
        items.append(("json where avro is expected", b"k", json.dumps(valid).encode()))
    else:
        items.append(("avro where json is expected", b"k", avro))
    return items


@pytest.fixture
def database(stack: Settings, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("db").replace("-", "_")
    yield name
    Client(host=stack.clickhouse_host, port=stack.clickhouse_port).execute(
        f"DROP DATABASE IF EXISTS {name}"
    )


def test_poison_on_every_input_topic_is_one_dead_letter_each_and_good_events_are_applied(
    stack: Settings,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    database: str,
) -> None:
    """Given a worker and a sink running; when an upstream client publishes good events with
    poison of every kind between them on every input topic; then each poison record is exactly
    one dead_letters row naming its topic, partition, offset and a readable reason, the good
    events' transitions are in ClickHouse, and neither process restarted."""
    app_id = unique_name("poison")
    prefix = app_id + "."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    spec = "avro," + ",".join(f"{t}={f}" for t, f in FORMATS.items())
    worker = start_worker(stack, prefix, app_id, tmp_path, "--input-format", spec)
    sink = start_sink(stack, prefix, database, tmp_path, batch_rows=None)
    client = Client(host=stack.clickhouse_host, port=stack.clickhouse_port, database=database)
    try:
        # each good step once the one before is applied (an independent producer carries no
        # arrival order across topics), poison between them on every topic
        # every record is told apart by its topic and bytes (all distinct within a topic): the
        # kind of each is known from what was published, its place from what the broker serves
        kinds: dict[tuple[str, str], str] = {}
        delivered = []
        for step in range(3):
            records: list[tuple[str, bytes | None, bytes]] = []
            for lead in ("G1", "G2"):
                short, event = _good_events(lead)[step]
                records.append((f"{prefix}leadflow.{short}", lead.encode(), _encode(short, event)))
                kinds[(records[-1][0], printable(records[-1][2]))] = "good"
            if step == 1:
                for short in FORMATS:
                    for kind, key, value in _poison(short):
                        records.append((f"{prefix}leadflow.{short}", key, value))
                        kinds[(records[-1][0], printable(value))] = kind
            delivered += _publish(stack.bootstrap, records)
            time.sleep(2)
        assert len(kinds) == len(delivered), "two published records are byte for byte the same"
        poison = {found: kind for found, kind in kinds.items() if kind != "good"}
        try:
            _until(
                lambda: (
                    _count(client, "SELECT count() FROM transitions FINAL") >= 6
                    and _count(client, "SELECT count() FROM dead_letters FINAL") >= len(poison)
                ),
                60,
                "good transitions and every dead letter in ClickHouse",
            )
        except AssertionError as exc:
            seen = {
                t: len(read_topic(stack.bootstrap, prefix + t, idle_s=1.0, deadline_s=5))
                for t in (*topics.INPUT_TOPICS, topics.DLQ, topics.TRANSITIONS)
            }
            raise AssertionError(f"{exc}; records per topic: {seen}") from None
        time.sleep(2)  # anything extra (a duplicate, a second letter) would show by now
        assert worker.poll() is None, "the worker stopped"
        assert sink.poll() is None, "the sink stopped"
    finally:
        stop(worker)
        stop(sink)
    stages = client.execute("SELECT lead_id, to_stage FROM transitions FINAL ORDER BY at")
    assert {lead for lead, _ in stages} == {"G1", "G2"}
    assert {stage for _, stage in stages} >= {"inquiry", "mql", "sal"}
    # where each record is, as the broker serves it (what the worker read)
    served: dict[tuple[str, str], tuple[int, int]] = {}
    for short in FORMATS:
        topic = f"{prefix}leadflow.{short}"
        for record in read_topic(stack.bootstrap, topic, idle_s=1.0, deadline_s=30):
            served[(topic, printable(record.value or b""))] = (record.partition, record.offset)
    assert served.keys() == kinds.keys(), "the broker does not serve what was published"
    letters = client.execute(
        "SELECT source_topic, source_partition, source_offset, reason, error_class, raw "
        "FROM dead_letters"
    )
    where = [(t, p, o) for t, p, o, *_ in letters]
    assert len(where) == len(set(where)), "a poison record has more than one dead letter"
    got = {(topic, raw): (p, o) for topic, p, o, _, _, raw in letters}
    assert len(got) == len(letters), "a poison record has more than one dead letter"
    # exactly the poison, each located at its own record (never a good event)
    want = {found: served[found] for found in poison}
    assert got == want, sorted(
        (kinds.get(k, "?"), k[0], k[1][:60], got.get(k), want.get(k))
        for k in set(got) | set(want)
        if got.get(k) != want.get(k)
    )[:5]
    for topic, _, _, reason, error_class, raw in letters:
        kind = poison[(topic, raw)]
        assert reason and len(reason) > 10 and error_class in ("InvalidEvent", "SchemaError"), kind
        if kind == "~900 KB value":
            assert "larger than" in reason and len(raw) > 900_000
    # librdkafka's delivery reports name the same places (Tansu's produce answers are right)
    reported = {
        (m.topic(), printable(m.value() or b"")): (m.partition(), m.offset()) for m in delivered
    }
    assert reported == served


def _count(client: Client, sql: str) -> int:
    try:
        return int(client.execute(sql)[0][0])
    except Exception:  # noqa: BLE001 — the sink has not created the tables yet
        return 0


# --- broker data loss and stops, on a private stack (its broker is restarted) ---------------


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    with private_stack(tmp_path / "stack") as private:
        yield private


def _restart_broker(private: EmbeddedStack) -> None:
    private._stop(private._kafka)
    private._start_kafka()
    private._wait_ready(private._kafka, 90)


def _publish_good(bootstrap: str, prefix: str, leads: list[str]) -> None:
    """Each lead's three steps, each once the one before is applied."""
    for step in range(3):
        records = []
        for lead in leads:
            short, event = _good_events(lead)[step]
            records.append((f"{prefix}leadflow.{short}", lead.encode(), encode_event(event)))
        _publish(bootstrap, records)
        time.sleep(1.5)


def test_a_broker_that_lost_its_data_stops_worker_and_sink_with_one_clear_error(
    own_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Given a worker and a sink that have applied and stored events; when the embedded broker
    restarts (memory storage: every topic, record and offset gone); then both stop within
    seconds, non-zero, each saying `broker data loss` once, and nothing was written after."""
    settings = own_stack.settings
    prefix, app_id = "loss.", "loss"
    create_topics(settings.bootstrap, settings.partitions, prefix)
    worker = start_worker(settings, prefix, app_id, tmp_path)
    sink = start_sink(settings, prefix, "loss", tmp_path, batch_rows=None)
    client = Client(host=settings.clickhouse_host, port=settings.clickhouse_port, database="loss")
    try:
        _publish_good(settings.bootstrap, prefix, ["L1", "L2"])
        _until(
            lambda: _count(client, "SELECT count() FROM transitions FINAL") >= 6,
            90,
            "transitions in ClickHouse",
        )
        _restart_broker(own_stack)
        _until(lambda: worker.poll() is not None and sink.poll() is not None, 40, "both stopped")
    finally:
        for process in (worker, sink):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert worker.returncode == 2, worker.log.read_text()[-2000:]  # type: ignore[attr-defined]
    assert sink.returncode == 1, sink.log.read_text()[-2000:]  # type: ignore[attr-defined]
    for process in (worker, sink):
        text = process.log.read_text(errors="replace")  # type: ignore[attr-defined]
        lines = [line for line in text.splitlines() if "broker data loss:" in line]
        assert len(lines) == 1, lines
        assert "gone" in lines[0] or "ahead of the log end" in lines[0]
    # nothing written into the restarted broker's nothing: no commit of our groups
    committed = asyncio.run(
        _committed(settings.bootstrap, prefix + "sink", f"{prefix}leadflow.transitions")
    )
    assert committed == {}


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offsets of `topic` by partition (partitions without one left out).
    One OffsetFetch per partition: Tansu breaks the connection on a group-wide one (INFRA.md).
    Every partition must be answered: a probe that timed out is an error, never "nothing
    committed" (BrokerProbe leaves unanswered partitions out)."""
    return {p: o for (_, p), o in (await _committed_all(bootstrap, group, [topic])).items()}


async def _committed_all(
    bootstrap: str, group: str, topic_names: list[str]
) -> dict[tuple[str, int], int]:
    """As `_committed`, for several topics: (topic, partition) → committed offset."""
    wanted = [(topic, p) for topic in topic_names for p in range(4)]
    probe = BrokerProbe(bootstrap, group, timeout_s=10.0)
    try:
        found = await probe.committed(wanted)
    finally:
        await probe.stop()
    assert set(found) == set(wanted), f"the broker did not answer for {set(wanted) - set(found)}"
    return {tp: o for tp, o in found.items() if o is not None}


async def _read_ends(bootstrap: str, topic_names: list[str]) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    ends: dict[tuple[str, int], int] = {}
    try:
        consumer.assign([TopicPartition(t, p) for t in topic_names for p in range(4)])
        await consumer.seek_to_beginning()
        last = time.monotonic()
        end = last + 30
        while time.monotonic() < end and time.monotonic() - last < 2.0:  # empty topics too
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                for record in records:
                    ends[(tp.topic, tp.partition)] = record.offset + 1
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return ends


def _log_ends(bootstrap: str, topic_names: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) → the offset after its last record, as the broker serves the records
    (not ListOffsets, wrong on Tansu), for partitions that have records."""
    return asyncio.run(_read_ends(bootstrap, topic_names))


def _committed_up_to(
    bootstrap: str, group: str, topic_names: list[str], ends: dict[tuple[str, int], int]
) -> bool:
    """The group committed exactly the log end of every partition with records (an empty
    partition: nothing or 0)."""
    committed = asyncio.run(_committed_all(bootstrap, group, topic_names))
    return all(committed.get(tp, 0) == ends.get(tp, 0) for tp in {*committed, *ends})


def test_sigterm_stops_worker_and_sink_within_10_s_with_the_broker_up_and_down(
    own_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Given a running worker and sink; SIGTERM ends each within 10 s with the broker up; and
    again with the broker gone."""
    settings = own_stack.settings
    prefix, app_id = "stop.", "stop"
    create_topics(settings.bootstrap, settings.partitions, prefix)
    client = Client(host=settings.clickhouse_host, port=settings.clickhouse_port, database="stop")
    seconds: dict[str, float] = {}
    for case in ("broker up", "broker down"):
        worker = start_worker(settings, prefix, app_id, tmp_path)
        sink = start_sink(settings, prefix, "stop", tmp_path, batch_rows=None)
        try:
            lead = "S1" if case == "broker up" else "S2"
            _publish_good(settings.bootstrap, prefix, [lead])
            query = f"SELECT count() FROM transitions FINAL WHERE lead_id = '{lead}'"
            _until(
                lambda query=query: _count(client, query) >= 3,  # type: ignore[misc]
                90,
                "transitions in ClickHouse",
            )
            if case == "broker down":
                own_stack._stop(own_stack._kafka)
                time.sleep(1)
            seconds[f"worker, {case}"] = _sigterm_seconds(worker)
            seconds[f"sink, {case}"] = _sigterm_seconds(sink)
        finally:
            for process in (worker, sink):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    print("seconds to stop:", seconds)
    assert all(s < STOP_WITHIN_S for s in seconds.values()), seconds


def test_sigterm_stops_the_sink_within_10_s_with_clickhouse_down_and_commits_only_what_it_wrote(
    own_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Given a sink that stored and committed everything so far, whose ClickHouse then went
    away while it holds new rows; SIGTERM ends it within 10 s without committing them; a sink
    started once ClickHouse is back stores every row and then commits up to the log end."""
    settings = own_stack.settings
    prefix, app_id = "chdown.", "chdown"
    group = prefix + "sink"
    sink_topics = [prefix + topic for topic in TABLE_OF_TOPIC]
    create_topics(settings.bootstrap, settings.partitions, prefix)
    client = Client(host=settings.clickhouse_host, port=settings.clickhouse_port, database="chdown")
    worker = start_worker(settings, prefix, app_id, tmp_path)
    sink = start_sink(settings, prefix, "chdown", tmp_path, batch_rows=None)
    try:
        _publish_good(settings.bootstrap, prefix, ["C1"])
        _until(
            lambda: _count(client, "SELECT count() FROM transitions FINAL") >= 3, 90, "C1 stored"
        )
        # rows are in ClickHouse a moment before their commit is: wait for the commit of every
        # record the worker wrote for C1 (the lead-state and attribution records come with the
        # transitions), so "before" is the sink's settled position, not a race with its commit
        time.sleep(2)
        ends_before = _log_ends(settings.bootstrap, sink_topics)
        _until(
            lambda: _committed_up_to(settings.bootstrap, group, sink_topics, ends_before),
            30,
            "the sink committed everything it stored",
        )
        committed_before = asyncio.run(_committed_all(settings.bootstrap, group, sink_topics))
        own_stack.stop_clickhouse()
        _publish_good(settings.bootstrap, prefix, ["C2", "C3"])
        log = sink.log  # type: ignore[attr-defined]
        _until(
            lambda: "ClickHouse unreachable" in log.read_text(errors="replace"),
            30,
            "the sink holds C2 and C3 and retries the insert",
        )
        time.sleep(1)
        seconds = _sigterm_seconds(sink)
        text = log.read_text(errors="replace")
        assert "held rows not written and not committed" in text, text[-2000:]
        committed_after = asyncio.run(_committed_all(settings.bootstrap, group, sink_topics))
        ends_after = _log_ends(settings.bootstrap, sink_topics)
        assert ends_after != ends_before, "the worker wrote nothing for C2 and C3"
        own_stack.up()
        sink = start_sink(settings, prefix, "chdown", tmp_path, batch_rows=None)
        _until(
            lambda: _count(client, "SELECT uniqExact(lead_id) FROM transitions FINAL") == 3,
            90,
            "C2 and C3 stored after the restart",
        )
        _until(
            lambda: _committed_up_to(settings.bootstrap, group, sink_topics, ends_after),
            30,
            "the restarted sink committed everything it stored",
        )
    finally:
        stop(worker)
        stop(sink)
    print("sink stop with ClickHouse down:", seconds)
    assert seconds < STOP_WITHIN_S
    assert committed_after == committed_before, "rows not written were committed"
