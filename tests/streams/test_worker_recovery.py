"""Exact recovery on the embedded broker: a stopped or killed worker resumes with its tables
and outputs exactly as an uninterrupted run left them.

The uninterrupted run is `Replayer` over the same file: tests/streams/test_worker_equals_replay.py
shows the worker matches it. Tansu reports end offsets wrongly, so without the fix in
streams/tansu.py Faust's recovery silently misses the last changelog batch of each partition;
`test_without_the_end_offset_fix_recovery_comes_up_short` shows these tests catch that.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
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
    outputs,
    start_worker,
    stop,
    table_values,
    wait_for_records,
    wait_until_quiet,
)


@pytest.fixture(scope="module")
def uninterrupted(generated_events: Path) -> Replayer:
    replayer = Replayer(load_definitions())
    for line_no, raw in enumerate(generated_events.read_bytes().splitlines(), start=1):
        replayer.feed_line(line_no, raw)
    return replayer


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
    wrong += [
        f"lead {k!r}" for k in expected.keys() | leads.keys() if leads.get(k) != expected.get(k)
    ]
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


def _stop_restart(
    stack: Settings, generated_events: Path, tmp_path: Path, name: str, *extra: str
) -> tuple[str, str]:
    """First half, worker until quiet, SIGTERM; second half, a new worker until quiet."""
    prefix, app_id = f"{name}.", name
    create_topics(stack.bootstrap, stack.partitions, prefix)
    first, second = _halves(generated_events, tmp_path)
    _publish(stack, first, prefix)
    worker = start_worker(stack, prefix, app_id, tmp_path, *extra)
    try:
        wait_until_quiet(stack.bootstrap, prefix + topics.LEAD_STATE)
    finally:
        stop(worker, signal.SIGTERM)
    _publish(stack, second, prefix)
    worker = start_worker(stack, prefix, app_id, tmp_path, *extra)
    try:
        wait_until_quiet(stack.bootstrap, prefix + topics.LEAD_STATE, quiet_s=6.0)
        assert worker.poll() is None, "the restarted worker died"
    finally:
        stop(worker, signal.SIGTERM)
    return prefix, app_id


def test_after_sigterm_and_restart_every_table_value_equals_the_uninterrupted_run(
    stack: Settings, generated_events: Path, tmp_path: Path, uninterrupted: Replayer
) -> None:
    _, app_id = _stop_restart(stack, generated_events, tmp_path, f"rterm{os.getpid()}")
    assert _table_mismatches(stack, app_id, uninterrupted) == []


def test_without_the_end_offset_fix_recovery_comes_up_short(
    stack: Settings, generated_events: Path, tmp_path: Path, uninterrupted: Replayer
) -> None:
    """The same run with Faust's end offsets as Tansu reports them: the tables go wrong."""
    _, app_id = _stop_restart(
        stack, generated_events, tmp_path, f"rshort{os.getpid()}", "--reported-end-offsets"
    )
    assert _table_mismatches(stack, app_id, uninterrupted) != []


def _by_id(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    copies: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        copies.setdefault(record["record_id"], []).append(record)
    return copies


def test_after_sigkill_mid_stream_outputs_equal_the_uninterrupted_run(
    stack: Settings,
    generated_events: Path,
    tmp_path: Path,
    uninterrupted: Replayer,
    unique_name: Callable[[str], str],
) -> None:
    prefix, app_id = f"rkill{os.getpid()}.", f"rkill{os.getpid()}"
    create_topics(stack.bootstrap, stack.partitions, prefix)
    _publish(stack, generated_events, prefix)
    expected: dict[str, list[Any]] = {}
    replay = Replayer(load_definitions(), lambda r: expected.setdefault(str(r.kind), []).append(r))
    for line_no, raw in enumerate(generated_events.read_bytes().splitlines(), start=1):
        replay.feed_line(line_no, raw)
    worker = start_worker(stack, prefix, app_id, tmp_path)
    try:  # kill once a quarter of the transitions are out
        at_kill = wait_for_records(
            stack.bootstrap, prefix + topics.TRANSITIONS, len(expected["transition"]) // 4
        )
    finally:
        stop(worker, signal.SIGKILL)
    assert 0 < at_kill < len(expected["transition"]), "not killed mid-stream"
    worker = start_worker(stack, prefix, app_id, tmp_path)
    try:  # the group first waits out the killed member's session
        wait_for_records(
            stack.bootstrap, prefix + topics.TRANSITIONS, len(expected["transition"]), 120
        )
        wait_until_quiet(stack.bootstrap, prefix + topics.LEAD_STATE)
        assert worker.poll() is None, "the restarted worker died"
    finally:
        stop(worker, signal.SIGTERM)
    got = outputs(stack.bootstrap, prefix)
    for kind, topic in (("transition", topics.TRANSITIONS), ("attribution", topics.ATTRIBUTION)):
        copies = _by_id(got[topic])
        want = {r.record_id for r in expected[kind]}
        assert set(copies) == want, (
            f"{kind}: missing {len(want - set(copies))}, extra {len(set(copies) - want)}"
        )
        assert all(all(c == cs[0] for c in cs) for cs in copies.values()), (
            f"{kind}: differing copies"
        )
    sla_copies = _by_id(got[topics.SLA])
    want_sla = {r.record_id: r for r in expected["sla"]}
    missing = [(r.lead_id, r.policy, str(r.event), str(r.at)) for k, r in want_sla.items() if k not in sla_copies]
    extra = [(c[0]["lead_id"], c[0]["policy"], c[0]["event"], c[0]["at"]) for k, c in sla_copies.items() if k not in want_sla]
    assert set(sla_copies) == set(want_sla), f"SLA records: missing {missing[:8]}, extra {extra[:8]}"
    assert all(all(c == cs[0] for c in cs) for cs in sla_copies.values())
    assert _table_mismatches(stack, app_id, uninterrupted) == []
