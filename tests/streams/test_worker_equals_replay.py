"""Same answers as replay: the worker in backfill mode on the real broker vs `leadflow replay`.

Given a generated dataset (duplicates, anonymous touches later identified, merges, late CRM
events) published to the embedded broker, when the worker runs with the event clock, then its
output topics hold the transitions, attribution credits, final lead states and SLA outcomes
that `leadflow replay` writes for the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from leadflow.settings import Settings
from leadflow.stack import free_port
from schemas.serde import decode_record
from streams import topics
from streams.definitions_file import load_definitions
from streams.replay import ReplayStats, replay_file
from tests.streams.harness import read_topic, start_worker, stop


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _latest(records: list[dict[str, Any]], key: str, order: str) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        seen = latest.get(record[key])
        if seen is None or record[order] >= seen[order]:
            latest[record[key]] = record
    return latest


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Metrics:
    """The worker's Prometheus samples: (name, sorted labels) → value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def worker_run(
    stack: Settings, generated_events: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, list[dict[str, Any]]], Metrics]:
    """Publish the dataset, run the worker (event clock) until its outputs go quiet; the topic
    prefix, the decoded outputs and the worker's metrics then."""
    tmp_path = tmp_path_factory.mktemp("equal")
    prefix = f"eq{os.getpid()}."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    asyncio.run(produce_file(generated_events, stack.bootstrap, "avro", topic_prefix=prefix))
    port = free_port()
    worker = start_worker(stack, prefix, f"eq{os.getpid()}", tmp_path, "--metrics-port", str(port))
    try:
        outputs = {}
        for topic in topics.OUTPUT_TOPICS:
            records = read_topic(stack.bootstrap, prefix + topic, idle_s=4.0, deadline_s=60)
            outputs[topic] = [decode_record(r.value) for r in records]
        assert worker.poll() is None, "the worker died"
        metrics = _scrape(port)
    finally:
        stop(worker)
    return prefix, outputs, metrics


@pytest.fixture(scope="module")
def worker_outputs(
    worker_run: tuple[str, dict[str, list[dict[str, Any]]], Metrics],
) -> dict[str, list[dict[str, Any]]]:
    return worker_run[1]


@pytest.fixture(scope="module")
def replay_run(
    generated_events: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ReplayStats]:
    out = tmp_path_factory.mktemp("replay")
    return out, replay_file(generated_events, out, load_definitions())


@pytest.fixture(scope="module")
def replayed(replay_run: tuple[Path, ReplayStats]) -> Path:
    return replay_run[0]


def test_the_worker_counts_what_replay_counts(
    worker_run: tuple[str, dict[str, list[dict[str, Any]]], Metrics],
    replay_run: tuple[Path, ReplayStats],
) -> None:
    """Its /metrics: every event applied, duplicates skipped, each output record sent."""
    prefix, outputs, metrics = worker_run
    stats = replay_run[1]
    assert metrics[("leadflow_worker_input_records_total", (("outcome", "applied"),))] == (
        stats.events
    )
    assert metrics[("leadflow_worker_duplicates_total", ())] == stats.duplicates > 0
    for topic in (topics.TRANSITIONS, topics.SLA, topics.ATTRIBUTION, topics.LEAD_STATE):
        key = ("leadflow_worker_output_records_total", (("topic", prefix + topic),))
        assert metrics[key] == len(outputs[topic]), topic


def _diff(name: str, want: set[Any], got: set[Any]) -> str:
    missing, extra = sorted(want - got)[:5], sorted(got - want)[:5]
    return f"{name}: {len(want)} in replay, {len(got)} from the worker; missing {missing}, extra {extra}"


def test_transitions_are_identical(
    worker_outputs: dict[str, list[dict[str, Any]]], replayed: Path
) -> None:
    fields: Callable[[dict[str, Any]], tuple[Any, ...]] = lambda r: (  # noqa: E731
        r["lead_id"],
        r["from_stage"],
        r["to_stage"],
        r["at"],
        r["event_id"],
    )
    want = {fields(r) for r in _lines(replayed / "transitions.jsonl")}
    got = {fields(r) for r in worker_outputs[topics.TRANSITIONS]}
    assert want == got, _diff("transitions", want, got)


def test_attribution_credits_are_identical(
    worker_outputs: dict[str, list[dict[str, Any]]], replayed: Path
) -> None:
    want = {(r["record_id"], r["credit_minor"]) for r in _lines(replayed / "attribution.jsonl")}
    got = {(r["record_id"], r["credit_minor"]) for r in worker_outputs[topics.ATTRIBUTION]}
    assert want == got, _diff("attribution credits", want, got)


def test_final_lead_states_are_identical(
    worker_outputs: dict[str, list[dict[str, Any]]], replayed: Path
) -> None:
    fields = ("stage", "episode", "score", "owner_id", "team_id", "erased", "merged_into")
    want = {
        r["lead_id"]: tuple(r[f] for f in fields) for r in _lines(replayed / "lead_states.jsonl")
    }
    latest = _latest(worker_outputs[topics.LEAD_STATE], "lead_id", "version")
    got = {lead: tuple(r[f] for f in fields) for lead, r in latest.items()}
    assert want == got, _diff("lead states", set(want.items()), set(got.items()))


def _sla_outcomes(records: list[dict[str, Any]], weekly: bool) -> set[tuple[Any, ...]]:
    fields = ("policy", "status", "due_at", "met_at", "breached_at", "owner_id")
    latest: dict[str, dict[str, Any]] = {}
    for record in records:  # per key, a topic keeps the order they happened in; files are final
        if (record["policy"] == "mql_weekly_target") == weekly:
            latest[record["instance_id"]] = record
    return {(instance, *(r[f] for f in fields)) for instance, r in latest.items()}


def test_lead_sla_outcomes_are_identical(
    worker_outputs: dict[str, list[dict[str, Any]]], replayed: Path
) -> None:
    want = _sla_outcomes(_lines(replayed / "sla.jsonl"), weekly=False)
    got = _sla_outcomes(worker_outputs[topics.SLA], weekly=False)
    assert want == got, _diff("SLA outcomes", want, got)


def test_weekly_mql_targets_are_identical(
    worker_outputs: dict[str, list[dict[str, Any]]], replayed: Path
) -> None:
    want = _sla_outcomes(_lines(replayed / "sla.jsonl"), weekly=True)
    got = _sla_outcomes(worker_outputs[topics.SLA], weekly=True)
    assert want and want == got, _diff("weekly MQL targets", want, got)


def test_recycles_and_re_mqls_are_in_the_data_and_identical(
    worker_outputs: dict[str, list[dict[str, Any]]], replayed: Path
) -> None:
    """The equality above covers the recycle rules: the dataset recycles leads, some of which
    re-qualify later (by a hand-raiser or touch by touch), and the worker agrees on each."""

    def recycling(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {
            (r["lead_id"], r["from_stage"], r["to_stage"], r["at"], r["event_id"], r["episode"])
            for r in rows
            if "recycled" in (r["from_stage"], r["to_stage"])
        }

    want = recycling(_lines(replayed / "transitions.jsonl"))
    assert sum(1 for r in want if r[2] == "recycled") >= 5
    assert sum(1 for r in want if r[1] == "recycled" and r[2] == "mql") >= 2
    got = recycling(worker_outputs[topics.TRANSITIONS])
    assert want == got, _diff("recycling transitions", want, got)
