"""The materialised truth of a run, as downstream holds it, in `streams.interleave.facts` form.

From the output topics: per key the record with the highest `revision`, then the retracted
(`deleted`) ones dropped (SLA keyed by `instance_id`, transitions and credits by `record_id`),
lead states the latest `version` per lead. From ClickHouse: the `*_current` views and
`lead_state FINAL`. From `leadflow replay`: its files. And an independent publisher: the
generated lines as an upstream system sends them with confluent-kafka (JSON values keyed by
lead, no leadflow headers) in a given arrival order.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams import topics
from streams.core.errors import InvalidEvent
from streams.core.events import parse_event, partition_key
from streams.interleave import facts, topic_of

Facts = dict[str, set[tuple[Any, ...]]]


def _current(records: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for record in records:  # a tie (a re-delivered copy) keeps the later one: per key in order
        seen = best.get(record[key])
        if seen is None or record["revision"] >= seen["revision"]:
            best[record[key]] = record
    return [r for r in best.values() if not r["deleted"]]


def _latest_states(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        seen = latest.get(record["lead_id"])
        if seen is None or record["version"] >= seen["version"]:
            latest[record["lead_id"]] = record
    return list(latest.values())


def topic_facts(outputs: dict[str, list[dict[str, Any]]]) -> Facts:
    """The truth the output topics leave (decoded records per short topic name)."""
    return facts(
        _current(outputs[topics.TRANSITIONS], "record_id"),
        _current(outputs[topics.SLA], "instance_id"),
        _current(outputs[topics.ATTRIBUTION], "record_id"),
        _latest_states(outputs[topics.LEAD_STATE]),
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def replay_facts(events: Path, out: Path, until: datetime | None = None) -> Facts:
    """`leadflow replay` of `events` (the command, in a process), its files as facts."""
    command = [sys.executable, "-m", "leadflow", "replay", "--input", str(events)]
    command += ["--output-dir", str(out)]
    if until is not None:
        command += ["--until", until.isoformat()]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return facts(
        _jsonl(out / "transitions.jsonl"),
        _jsonl(out / "sla.jsonl"),
        _jsonl(out / "attribution.jsonl"),
        _jsonl(out / "lead_states.jsonl"),
    )


# --- ClickHouse ------------------------------------------------------------------------------

_COLUMNS = {
    "transitions": (
        "transitions_current",
        "record_id, lead_id, from_stage, to_stage, at, "
        "event_id, episode, reason, revision, deleted",
    ),
    "sla": (
        "sla_current",
        "instance_id, lead_id, policy, status, started_at, due_at, met_at, "
        "breached_at, warned_at, escalated_at, owner_id, target, actual, version, deleted",
    ),
    "credits": (
        "attribution_current",
        "record_id, lead_id, opportunity_id, trigger, model, "
        "touch_event_id, credit_minor, revision, deleted",
    ),
    "lead_states": (
        "(SELECT * FROM lead_state FINAL)",
        "lead_id, stage, episode, score, owner_id, team_id, erased, merged_into, version",
    ),
}


def clickhouse_facts(client: Any) -> Facts:
    """The truth ClickHouse gives: the `*_current` views and `lead_state FINAL` (times at the
    tables' resolution, seconds; flags as 0/1)."""
    rows = {}
    for kind, (source, columns) in _COLUMNS.items():
        names = [c.strip() for c in columns.split(",")]
        rows[kind] = [
            dict(zip(names, row, strict=True))
            for row in client.execute(f"SELECT {columns} FROM {source}")
        ]
    for row in rows["sla"]:
        row["revision"] = row.pop("version")
    return seconds(facts(rows["transitions"], rows["sla"], rows["credits"], rows["lead_states"]))


def _second(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.replace(microsecond=0)
    if isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
        try:
            return _second(datetime.fromisoformat(value))
        except ValueError:
            return value
    return value


def seconds(found: Facts) -> Facts:
    """`found` with every time truncated to the second and booleans as 0/1 (as ClickHouse's
    DateTime and UInt8 columns hold them)."""
    return {kind: {tuple(_second(v) for v in row) for row in rows} for kind, rows in found.items()}


def counts(found: Facts) -> dict[str, int]:
    return {kind: len(rows) for kind, rows in found.items()}


def diff_text(want: Facts, got: Facts, shown: int = 4) -> str:
    """Per kind that differs: how many facts only replay has, only the run has, and examples."""
    parts = []
    for kind in want:
        missing, extra = want[kind] - got[kind], got[kind] - want[kind]
        if missing or extra:
            parts.append(
                f"{kind}: {len(missing)} only in replay {sorted(missing, key=repr)[:shown]}, "
                f"{len(extra)} only in the run {sorted(extra, key=repr)[:shown]}"
            )
    return "; ".join(parts)


# --- an independent publisher ----------------------------------------------------------------


def _route(line: bytes) -> tuple[str, bytes | None] | None:
    """(short topic, key) an upstream system would use for `line`; None: no topic for it."""
    topic = topic_of(line)
    if topic == "bad":
        return None
    try:
        return topic, partition_key(parse_event(orjson.loads(line))).encode()
    except (InvalidEvent, orjson.JSONDecodeError, TypeError, ValueError):
        lead = orjson.loads(line).get("lead_id")  # an invalid event of a known type
        return topic, lead.encode() if isinstance(lead, str) else None


def publish_independently(
    bootstrap: str, prefix: str, lines: Iterable[bytes], rate: float | None = 2000.0
) -> int:
    """Publish `lines` in this order with confluent-kafka as upstream systems do: the raw JSON
    line as the value, keyed by lead (the Java client's partitioner, murmur2, as the topics'
    contract says), no headers; at `rate` records/s. Returns how many were sent."""
    import confluent_kafka

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": False,  # Tansu rejects InitProducerId (INFRA.md)
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    errors: list[Any] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(error)

    sent = 0
    started = time.perf_counter()
    for line in lines:
        route = _route(line)
        if route is None:
            continue
        topic, key = route
        while True:
            try:
                producer.produce(prefix + topic, line, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        sent += 1
        if rate:
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0, "not everything was delivered"
    assert not errors, errors[:3]
    return sent


def late_arrivals(order: list[bytes]) -> int:
    """How many events arrive after an event of the same lead that occurred later (each one a
    merge into the lead's past and a re-fold)."""
    latest: dict[str, datetime] = {}
    late = 0
    for line in order:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        lead, at = obj.get("lead_id"), obj.get("occurred_at")
        if not isinstance(lead, str) or not isinstance(at, str):
            continue
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            continue
        if lead in latest and when < latest[lead]:
            late += 1
        elif lead not in latest or when > latest[lead]:
            latest[lead] = when
    return late
