"""One truth however the upstream systems sync, on the real broker and ClickHouse (issue 13, 2).

Given the generated dataset (duplicates, anonymous touches identified later, merges, erasures,
late CRM events, bad lines), re-interleaved across its three topics with skew and a fifth of the
CRM activities delayed, published by an independent client (confluent-kafka: the JSON line as
the value, keyed by lead, no leadflow headers), when `leadflow worker --clock event
--input-format json` applies it — one worker; two workers with one SIGKILLed mid-stream; one
worker SIGKILLed twice with `leadflow sink` SIGKILLed once — then the materialised truth (per key
the highest revision, retractions dropped; the latest lead state) of the output topics, and of
ClickHouse's `*_current` views and `lead_state FINAL`, equals `leadflow replay` of the file.

Without a `leadflow-clock` header the worker's event clock is the largest occurred_at it has
applied, and it fires the timers due by it after every event (streams/pipeline.py); replay's
clock at the end is the largest occurred_at of the file. One worker sees every event, so its
last watermark is replay's last clock and no extra tick is needed.

Two workers on the full data (identity steps crossing workers) do not equal replay yet: some
stitched touches and weekly MQL counts go missing between workers. That is open (issue 13);
`python bench/worker_order_drill.py --modes two two-killed` shows it.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leadflow.kafka_admin import create_topics
from leadflow.settings import Settings
from streams import topics
from streams.interleave import by_topic, delayed, interleave
from tests.streams.harness import (
    outputs,
    start_sink,
    start_worker,
    stop,
    wait_for_records,
    wait_until_quiet,
)
from tests.streams.truth import (
    Facts,
    clickhouse_facts,
    counts,
    diff_text,
    late_arrivals,
    publish_independently,
    replay_facts,
    seconds,
    topic_facts,
)

pytest.importorskip("confluent_kafka")

JSON_INPUT = ("--input-format", "json")


@pytest.fixture(scope="module")
def replayed(generated_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Facts:
    """`leadflow replay` of the file, in file order."""
    return replay_facts(generated_events, tmp_path_factory.mktemp("replay"))


@pytest.fixture(scope="module")
def arrival(generated_events: Path) -> list[bytes]:
    """The file as upstream systems deliver it: each topic's order kept, the topics interleaved
    in runs of up to 50, a fifth of the activities up to 400 places late."""
    lines = [line for line in generated_events.read_bytes().splitlines() if line.strip()]
    rng = random.Random(1313)
    order = delayed(interleave(by_topic(lines), rng, 50), rng, 0.2, by=400)
    assert sorted(order) == sorted(lines)
    return order


def test_the_arrival_order_really_differs_from_file_order(
    generated_events: Path, arrival: list[bytes]
) -> None:
    """Many events reach their lead after a later-occurring one: merges into the past."""
    lines = [line for line in generated_events.read_bytes().splitlines() if line.strip()]
    moved = sum(1 for a, b in zip(lines, arrival, strict=True) if a != b)
    assert moved > len(lines) // 2
    assert late_arrivals(arrival) > 100 + late_arrivals(lines)


class _Publishing(threading.Thread):
    """`publish_independently` in the background, so a process can be killed mid-stream."""

    def __init__(self, bootstrap: str, prefix: str, lines: list[bytes], rate: float) -> None:
        super().__init__(daemon=True)
        self._args = (bootstrap, prefix, lines, rate)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            publish_independently(*self._args)
        except BaseException as exc:  # noqa: BLE001 — reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive(), "publishing did not finish"
        if self.error is not None:
            raise self.error


def _settled(stack: Settings, prefix: str, worker: Any, who: str) -> dict[str, list[Any]]:
    """Once the outputs went quiet (the `who` worker still running): every output record."""
    wait_until_quiet(stack.bootstrap, prefix + topics.LEAD_STATE, quiet_s=5.0, deadline_s=180)
    assert worker.poll() is None, f"the {who} worker died; log {worker.log}"
    return outputs(stack.bootstrap, prefix)


def test_one_worker_fed_by_an_independent_publisher_leaves_replays_truth(
    stack: Settings,
    arrival: list[bytes],
    replayed: Facts,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    app_id = unique_name("etone")
    prefix = app_id + "."
    create_topics(stack.bootstrap, stack.partitions, prefix)
    publish_independently(stack.bootstrap, prefix, arrival)
    worker = start_worker(stack, prefix, app_id, tmp_path, *JSON_INPUT)
    try:
        got = topic_facts(_settled(stack, prefix, worker, "only"))
    finally:
        stop(worker)
    assert replayed["sla"] and replayed["credits"] and replayed["transitions"]
    assert got == replayed, diff_text(replayed, got)


def _converged(stack: Settings, prefix: str, worker: Any, want: Facts, deadline_s: float) -> Facts:
    """The output topics' truth once it equals `want`, or stopped changing for 25 s (longer
    than a restarted worker's rejoin on the embedded broker), or at the deadline."""
    end = time.monotonic() + deadline_s
    last, since = None, time.monotonic()
    while True:
        got = topic_facts(_settled(stack, prefix, worker, "restarted"))
        if got == want or time.monotonic() > end or time.monotonic() - since > 25:
            return got
        if got != last:
            last, since = got, time.monotonic()


def _wait_for_clickhouse(client: Any, want: Facts, deadline_s: float) -> Facts:
    """ClickHouse's truth once it equals `want` or stopped changing for 10 s (at the deadline)."""
    end = time.monotonic() + deadline_s
    last, since = None, time.monotonic()
    while True:
        got = clickhouse_facts(client)
        if got == want or time.monotonic() > end or time.monotonic() - since > 10:
            return got
        if got != last:
            last, since = got, time.monotonic()
        time.sleep(1)


def test_worker_killed_twice_and_sink_killed_once_leave_replays_truth_in_clickhouse(
    stack: Settings,
    arrival: list[bytes],
    replayed: Facts,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    clickhouse: Any,
) -> None:
    app_id = unique_name("etch")
    prefix = app_id + "."
    database = clickhouse.connection.database
    create_topics(stack.bootstrap, stack.partitions, prefix)
    total = len(replayed["transitions"])
    worker = start_worker(stack, prefix, app_id, tmp_path / "w", *JSON_INPUT)
    sink = start_sink(stack, prefix, database, tmp_path / "s")
    try:
        publishing = _Publishing(stack.bootstrap, prefix, arrival, rate=150.0)
        publishing.start()
        for fraction, victim in ((0.25, "worker"), (0.5, "sink"), (0.75, "worker")):
            wait_for_records(
                stack.bootstrap, prefix + topics.TRANSITIONS, int(total * fraction), 120
            )
            assert publishing.is_alive(), f"{victim} not killed mid-stream"
            if victim == "worker":
                stop(worker, signal.SIGKILL)
                worker = start_worker(stack, prefix, app_id, tmp_path / "w", *JSON_INPUT)
            else:
                stop(sink, signal.SIGKILL)
                sink = start_sink(stack, prefix, database, tmp_path / "s")
        publishing.finish()
        on_topics = _converged(stack, prefix, worker, replayed, 240)
        in_clickhouse = _wait_for_clickhouse(clickhouse, seconds(replayed), 120)
        assert sink.poll() is None, f"the sink died; log {sink.log}"  # type: ignore[attr-defined]
    finally:
        stop(worker, signal.SIGKILL)
        stop(sink, signal.SIGKILL)
    assert on_topics == replayed, "output topics: " + diff_text(replayed, on_topics)
    retracted = sum(
        clickhouse.execute(f"SELECT count() FROM {table} WHERE deleted = 1")[0][0]
        for table in ("transitions", "sla", "attribution")
    )
    assert retracted > 0, "no retraction reached ClickHouse: the views had nothing to drop"
    assert counts(in_clickhouse) == counts(seconds(replayed))
    assert in_clickhouse == seconds(replayed), "ClickHouse: " + diff_text(
        seconds(replayed), in_clickhouse
    )
