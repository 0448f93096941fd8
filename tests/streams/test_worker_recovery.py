"""Exact recovery on the embedded broker: a stopped or killed worker resumes with its tables
and outputs exactly as an uninterrupted run left them.

The uninterrupted run is `Replayer` over the same file: tests/streams/test_worker_equals_replay.py
shows the worker matches it. Tansu reports end offsets wrongly, so without the fix in
streams/tansu.py Faust's recovery silently misses the last changelog batch of each partition;
the restarted worker logs the size and digest of each table it recovered, and the SIGTERM test
compares them with what the changelogs hold (tests/streams/test_tansu.py shows the broker's
short end offsets and the fix on a multi-record batch).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from leadflow.settings import Settings
from streams import topics
from streams.definitions_file import load_definitions
from streams.pipeline import ANONYMOUS_TABLE, LEAD_TABLE, WEEKLY_KEY, WEEKLY_TABLE
from streams.replay import Replayer
from tests.streams.harness import (
    changelog_digests,
    outputs,
    recovered_digests,
    start_worker,
    stop,
    table_values,
    wait_for_records,
    wait_until_quiet,
)


@pytest.fixture(scope="module")
def uninterrupted(generated_events: Path) -> Replayer:
    return _replayed_records(generated_events)[0]


def _halves(path: Path, tmp_path: Path) -> tuple[Path, Path]:
    lines = path.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(lines[: len(lines) // 2]))
    second.write_bytes(b"".join(lines[len(lines) // 2 :]))
    return first, second


def _publish(stack: Settings, path: Path, prefix: str) -> None:
    asyncio.run(produce_file(path, stack.bootstrap, "avro", topic_prefix=prefix))


def _table_mismatches(stack: Settings, app_id: str, want: Replayer) -> list[str]:
    """Keys whose table value differs from the uninterrupted run's (empty: all equal)."""
    wrong = []
    leads = table_values(stack.bootstrap, app_id, LEAD_TABLE)
    expected = {lead_id.encode(): state for lead_id, state in want.leads.items()}
    for key in sorted(expected.keys() | leads.keys()):
        got, want_state = leads.get(key), expected.get(key)
        if got != want_state:
            differing = (
                [
                    f
                    for f in fields(want_state)
                    if getattr(got, f.name) != getattr(want_state, f.name)
                ]
                if got is not None and want_state is not None
                else ["missing" if got is None else "unexpected"]
            )
            wrong.append(f"lead {key.decode()}: {differing}")
    anonymous = table_values(stack.bootstrap, app_id, ANONYMOUS_TABLE)
    expected_anonymous = {key.encode(): state for key, state in want.anonymous.items()}
    wrong += [
        f"anonymous {k!r}"
        for k in expected_anonymous.keys() | anonymous.keys()
        if anonymous.get(k) != expected_anonymous.get(k)
    ]
    weekly = table_values(stack.bootstrap, app_id, WEEKLY_TABLE).get(WEEKLY_KEY)
    if weekly is None or weekly.tally != want.weekly_tally:
        wrong.append("weekly tally")
    return wrong


TABLES = [LEAD_TABLE, ANONYMOUS_TABLE, WEEKLY_TABLE]


def _until_done(stack: Settings, prefix: str, transitions: int, worker: Any, who: str) -> None:
    """Wait until all `transitions` are out (at most 120 s) and the outputs went quiet; the
    `who` worker must still be running."""
    wait_for_records(stack.bootstrap, prefix + topics.TRANSITIONS, transitions, 120)
    wait_until_quiet(stack.bootstrap, prefix + topics.LEAD_STATE)
    assert worker.poll() is None, f"the {who} worker died"


def _stop_restart(
    stack: Settings,
    generated_events: Path,
    tmp_path: Path,
    name: str,
    transitions: int,
    *worker_args: str,
) -> tuple[str, dict[str, str], dict[str, str]]:
    """First half, worker until quiet, SIGTERM; second half, a new worker until quiet.

    Returns the app id, the digests of the tables as written before the restart (from the
    changelogs) and as the restarted worker recovered them (from its log)."""
    prefix, app_id = f"{name}.", name
    create_topics(stack.bootstrap, stack.partitions, prefix)
    first, second = _halves(generated_events, tmp_path)
    _publish(stack, first, prefix)
    worker = start_worker(stack, prefix, app_id, tmp_path, *worker_args)
    try:
        wait_until_quiet(stack.bootstrap, prefix + topics.LEAD_STATE)
    finally:
        stop(worker, signal.SIGTERM)
    written = changelog_digests(stack.bootstrap, app_id, TABLES)
    _publish(stack, second, prefix)
    worker = start_worker(stack, prefix, app_id, tmp_path, *worker_args)
    try:  # every transition of the whole file, then quiet
        _until_done(stack, prefix, transitions, worker, "restarted")
    finally:
        stop(worker, signal.SIGTERM)
    return app_id, written, recovered_digests(worker.log)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def stopped_and_restarted(
    stack: Settings,
    generated_events: Path,
    tmp_path_factory: pytest.TempPathFactory,
    uninterrupted: Replayer,
) -> tuple[str, dict[str, str], dict[str, str]]:
    return _stop_restart(
        stack,
        generated_events,
        tmp_path_factory.mktemp("sigterm"),
        f"rterm{os.getpid()}",
        uninterrupted.stats.transitions,
    )


def test_after_sigterm_the_restarted_worker_recovers_every_changelog_record(
    stopped_and_restarted: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    _, written, recovered = stopped_and_restarted
    assert set(recovered) == {LEAD_TABLE, ANONYMOUS_TABLE, WEEKLY_TABLE}
    assert recovered == written


def test_after_sigterm_and_restart_every_table_value_equals_the_uninterrupted_run(
    stack: Settings,
    stopped_and_restarted: tuple[str, dict[str, str], dict[str, str]],
    uninterrupted: Replayer,
) -> None:
    app_id, _, _ = stopped_and_restarted
    assert _table_mismatches(stack, app_id, uninterrupted) == []


def test_with_the_durable_rocksdb_store_a_sigterm_restart_ends_with_the_uninterrupted_tables(
    stack: Settings, generated_events: Path, tmp_path: Path, uninterrupted: Replayer
) -> None:
    """`--store rocksdb://` (rocksdict): the restarted worker reopens its local databases and
    reads the changelog only past their persisted offsets."""
    app_id, written, recovered = _stop_restart(
        stack,
        generated_events,
        tmp_path,
        f"rrocks{os.getpid()}",
        uninterrupted.stats.transitions,
        "--store",
        "rocksdb://",
    )
    assert recovered == written
    assert _table_mismatches(stack, app_id, uninterrupted) == []
    assert list((tmp_path / "worker" / app_id).rglob("*.sst")), "nothing written to RocksDB"


def _by_id(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    copies: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        copies.setdefault(record["record_id"], []).append(record)
    return copies


def _replayed_records(path: Path) -> tuple[Replayer, dict[str, list[Any]]]:
    """The uninterrupted run over `path`: the replayer and its output records by kind."""
    expected: dict[str, list[Any]] = {}
    replay = Replayer(load_definitions(), lambda r: expected.setdefault(str(r.kind), []).append(r))
    for line_no, raw in enumerate(path.read_bytes().splitlines(), start=1):
        replay.feed_line(line_no, raw)
    return replay, expected


def _assert_same_records(label: str, got: list[dict[str, Any]], want_ids: set[str]) -> None:
    """`got` holds exactly the records `want_ids`, re-deliveries only as exact copies."""
    copies = _by_id(got)
    assert set(copies) == want_ids, (
        f"{label}: missing {len(want_ids - set(copies))}, extra {len(set(copies) - want_ids)}"
    )
    assert all(all(c == cs[0] for c in cs) for cs in copies.values()), f"{label}: differing copies"


@pytest.mark.parametrize(
    "membership", [(), ("--instance-id", "worker-1")], ids=["dynamic", "static"]
)
def test_after_sigkill_mid_stream_outputs_equal_the_uninterrupted_run(
    stack: Settings,
    generated_events: Path,
    tmp_path: Path,
    uninterrupted: Replayer,
    unique_name: Callable[[str], str],
    membership: tuple[str, ...],
) -> None:
    """Static membership (`--instance-id`): the restarted worker takes its partitions back at
    once, without waiting for the killed one's session to expire."""
    app_id = unique_name("rkill")
    prefix = app_id + "."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    _publish(stack, generated_events, prefix)
    _, expected = _replayed_records(generated_events)
    worker = start_worker(stack, prefix, app_id, tmp_path, *membership)
    try:  # kill once a quarter of the transitions are out
        at_kill = wait_for_records(
            stack.bootstrap, prefix + topics.TRANSITIONS, len(expected["transition"]) // 4
        )
    finally:
        stop(worker, signal.SIGKILL)
    assert 0 < at_kill < len(expected["transition"]), "not killed mid-stream"
    worker = start_worker(stack, prefix, app_id, tmp_path, *membership)
    try:  # dynamic: the group first waits out the killed member's session
        _until_done(stack, prefix, len(expected["transition"]), worker, "restarted")
    finally:
        stop(worker, signal.SIGTERM)
    got = outputs(stack.bootstrap, prefix)
    for kind, topic in (("transition", topics.TRANSITIONS), ("attribution", topics.ATTRIBUTION)):
        _assert_same_records(kind, got[topic], {r.record_id for r in expected[kind]})
    sla_copies = _by_id(got[topics.SLA])
    want_sla = {r.record_id: r for r in expected["sla"]}
    missing = [
        (r.lead_id, r.policy, str(r.event), str(r.at))
        for k, r in want_sla.items()
        if k not in sla_copies
    ]
    extra = [
        (c[0]["lead_id"], c[0]["policy"], c[0]["event"], c[0]["at"])
        for k, c in sla_copies.items()
        if k not in want_sla
    ]
    assert set(sla_copies) == set(want_sla), (
        f"SLA records: missing {missing[:8]}, extra {extra[:8]}"
    )
    assert all(all(c == cs[0] for c in cs) for cs in sla_copies.values())
    assert _table_mismatches(stack, app_id, uninterrupted) == []


def _lead_keyed_only(source: Path, target: Path) -> Path:
    """`source` without what crosses partitions: anonymous touches, identifications, merges.

    With several workers, backfill order is exact per worker only (docs/streaming.md): a
    forward to a lead another worker owns is not waited for, so stitching and merges can land
    at another point of that lead's history than in replay. Every other event is keyed by its
    lead, so each lead's history stays on one worker at a time.
    """
    kept = []
    for raw in source.read_bytes().splitlines(keepends=True):
        if b'"lead_id"' not in raw or b'"event_type":"lead_identified"' in raw:
            continue
        if b'"event_type":"lead_merged"' in raw:
            continue
        kept.append(raw)
    target.write_bytes(b"".join(kept))
    return target


def test_two_workers_one_killed_mid_stream_outputs_equal_the_uninterrupted_run(
    stack: Settings, generated_events: Path, tmp_path: Path
) -> None:
    """Two workers share the partitions; one is SIGKILLed once a quarter of the transitions are
    out; the other takes its partitions over, recovers their tables and finishes. Every
    transition, attribution credit and per-lead SLA record of the uninterrupted run is there,
    nothing else (re-deliveries only as exact copies), and the lead table equals it."""
    data = _lead_keyed_only(generated_events, tmp_path / "lead-keyed.jsonl")
    replay, expected = _replayed_records(data)
    name = f"rtwo{os.getpid()}"
    prefix = f"{name}."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    _publish(stack, data, prefix)
    survivor = start_worker(stack, prefix, name, tmp_path / "survivor")
    killed = start_worker(stack, prefix, name, tmp_path / "killed")
    try:
        at_kill = wait_for_records(
            stack.bootstrap, prefix + topics.TRANSITIONS, len(expected["transition"]) // 4
        )
        stop(killed, signal.SIGKILL)
        assert 0 < at_kill < len(expected["transition"]), "not killed mid-stream"
        _until_done(stack, prefix, len(expected["transition"]), survivor, "surviving")
    finally:
        stop(killed, signal.SIGKILL)
        stop(survivor, signal.SIGTERM)
    got = outputs(stack.bootstrap, prefix)
    for kind, topic in (("transition", topics.TRANSITIONS), ("attribution", topics.ATTRIBUTION)):
        _assert_same_records(kind, got[topic], {r.record_id for r in expected[kind]})
    # per lead; the weekly MQL target records count MQLs sent from both workers to one tally,
    # whose week may close before a count from the other worker arrives
    _assert_same_records(
        "SLA",
        [r for r in got[topics.SLA] if r["lead_id"] is not None],
        {r.record_id for r in expected["sla"] if r.lead_id is not None},
    )
    leads = table_values(stack.bootstrap, name, LEAD_TABLE)
    assert {k.decode(): v for k, v in leads.items()} == replay.leads
