"""Worker arrival-order drill on the real broker (and ClickHouse): prints a verdict per run.

    python bench/worker_order_drill.py [--leads 3000] [--days 90] [--seeds 1201 4242]
        [--modes one two-killed clickhouse] [--rate 2000]

The large form of tests/streams/test_worker_event_time.py. For each seed: a generated file,
re-interleaved across its three topics (each topic's order kept, runs of up to 50, a fifth of
the CRM activities up to 400 places late), published by confluent-kafka as upstream systems do
(JSON, keyed by lead, no leadflow headers) into `leadflow worker --clock event --input-format
json`; the materialised truth of the output topics (highest revision per key, retractions
dropped, latest lead state) must equal `leadflow replay` of the file. Modes:

- `one`: one worker;
- `two`: two workers on the full data (identity steps included), both to the end;
- `two-killed`: two workers on the full data (identity steps included), one SIGKILLed once a
  quarter of replay's transitions are out;
- `clickhouse`: one worker SIGKILLed twice and `leadflow sink` SIGKILLed once mid-stream; the
  truth of the `*_current` views and `lead_state FINAL` is compared too.

Starts its own embedded stack on free ports and stops it at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import signal
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clickhouse_driver import Client  # noqa: E402

from leadflow.kafka_admin import create_topics  # noqa: E402
from leadflow.settings import Settings  # noqa: E402
from leadflow.stack import private_stack  # noqa: E402
from streams import topics  # noqa: E402
from streams.definitions_file import load_definitions  # noqa: E402
from streams.generate import generate  # noqa: E402
from streams.interleave import by_topic, delayed, interleave  # noqa: E402
from tests.streams.harness import (  # noqa: E402
    outputs,
    start_sink,
    start_worker,
    stop,
    wait_for_records,
    wait_until_quiet,
)
from tests.streams.truth import (  # noqa: E402
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

JSON_INPUT = ("--input-format", "json")


def _publisher(settings: Settings, prefix: str, order: list[bytes], rate: float) -> Any:
    thread = threading.Thread(
        target=publish_independently, args=(settings.bootstrap, prefix, order, rate), daemon=True
    )
    thread.start()
    return thread


def _run(
    settings: Settings,
    mode: str,
    name: str,
    order: list[bytes],
    want: Facts,
    rate: float,
    work: Path,
) -> tuple[Facts, Facts | None, str]:
    """One run; the facts of the output topics, of ClickHouse (clickhouse mode) and a note."""
    prefix = name + "."
    create_topics(settings.bootstrap, settings.partitions, prefix)
    transitions = len(want["transitions"])
    note = ""
    database = name.replace("-", "_")
    workers = [start_worker(settings, prefix, name, work / "w0", *JSON_INPUT)]
    if mode in ("two", "two-killed"):
        workers.append(start_worker(settings, prefix, name, work / "w1", *JSON_INPUT))
    sink = None
    if mode == "clickhouse":
        Client(host=settings.clickhouse_host, port=settings.clickhouse_port).execute(
            f"CREATE DATABASE {database}"
        )
        sink = start_sink(settings, prefix, database, work / "s")
    try:
        time.sleep(8)  # joined: the partitions are shared before the data comes
        publishing = _publisher(settings, prefix, order, rate)
        if mode == "two-killed":
            wait_for_records(settings.bootstrap, prefix + topics.TRANSITIONS, transitions // 4, 300)
            stop(workers.pop(), signal.SIGKILL)
            note = f"killed mid-stream: {publishing.is_alive()}"
        elif mode == "clickhouse":
            alive = []
            for fraction, victim in ((0.25, "worker"), (0.5, "sink"), (0.75, "worker")):
                wait_for_records(
                    settings.bootstrap,
                    prefix + topics.TRANSITIONS,
                    int(transitions * fraction),
                    300,
                )
                alive.append(publishing.is_alive())
                if victim == "worker":
                    stop(workers[0], signal.SIGKILL)
                    workers[0] = start_worker(settings, prefix, name, work / "w0", *JSON_INPUT)
                else:
                    assert sink is not None
                    stop(sink, signal.SIGKILL)
                    sink = start_sink(settings, prefix, database, work / "s")
            note = f"worker, sink, worker killed mid-stream: {alive}"
        publishing.join(600)
        wait_until_quiet(
            settings.bootstrap, prefix + topics.LEAD_STATE, quiet_s=6.0, deadline_s=600
        )
        note += f"; worker alive at the end: {workers[0].poll() is None}"
        on_topics = topic_facts(outputs(settings.bootstrap, prefix))
        in_clickhouse = None
        if mode == "clickhouse":
            client = Client(
                host=settings.clickhouse_host, port=settings.clickhouse_port, database=database
            )
            target, end, last, since = seconds(want), time.monotonic() + 300, None, time.monotonic()
            while True:
                in_clickhouse = clickhouse_facts(client)
                if in_clickhouse == target or time.monotonic() > end:
                    break
                if in_clickhouse != last:
                    last, since = in_clickhouse, time.monotonic()
                elif time.monotonic() - since > 15:
                    break
                time.sleep(1)
        return on_topics, in_clickhouse, note
    finally:
        for worker in workers:
            stop(worker, signal.SIGKILL)
        if sink is not None:
            stop(sink, signal.SIGKILL)


def _dump(path: Path, want: Facts, on_topics: Facts, in_clickhouse: Facts | None) -> None:
    """Every fact only replay has and only the run has, per kind (topics; ClickHouse)."""
    found = {"topics": on_topics, "clickhouse": in_clickhouse}
    report = {
        where: {
            kind: {
                "only_replay": sorted(map(str, reference[kind] - got[kind])),
                "only_run": sorted(map(str, got[kind] - reference[kind])),
            }
            for kind in reference
        }
        for where, got in found.items()
        if got is not None
        for reference in [want if where == "topics" else seconds(want)]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=3000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1201, 4242])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["one", "two-killed", "clickhouse"],
        choices=["one", "two", "two-killed", "clickhouse"],
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="published records/s")
    parser.add_argument("--dump", type=Path, help="write every differing fact here (JSON)")
    args = parser.parse_args()
    defs = load_definitions()
    failed = runs = 0
    with (
        tempfile.TemporaryDirectory(prefix="order-drill-") as tmp,
        private_stack(Path(tmp) / "stack") as stack,
    ):
        settings = stack.settings
        for seed in args.seeds:
            events = Path(tmp) / f"events-{seed}.jsonl"
            out = io.BytesIO()
            generate(defs, out, args.leads, args.days, seed, date(2026, 1, 5), bad_fraction=0.01)
            events.write_bytes(out.getvalue())
            want = replay_facts(events, Path(tmp) / f"replay-{seed}")
            lines = [line for line in out.getvalue().splitlines() if line.strip()]
            rng = random.Random(seed)
            order = delayed(interleave(by_topic(lines), rng, 50), rng, 0.2, by=400)
            print(
                f"seed {seed}: {len(lines):,} events, {late_arrivals(order):,} arrive after a "
                f"later event of their lead; replay: {counts(want)}",
                flush=True,
            )
            for mode in args.modes:
                runs += 1
                started = time.perf_counter()
                name = f"drill-{mode}-{seed}-{int(time.time())}"
                work = Path(tmp) / name
                on_topics, in_clickhouse, note = _run(
                    settings, mode, name, order, want, args.rate, work
                )
                took = time.perf_counter() - started
                verdict = "identical" if on_topics == want else diff_text(want, on_topics)
                line = f"  {mode}: topics {verdict}"
                bad = on_topics != want
                if in_clickhouse is not None:
                    ok = in_clickhouse == seconds(want)
                    bad = bad or not ok
                    line += "; ClickHouse " + (
                        "identical" if ok else diff_text(seconds(want), in_clickhouse)
                    )
                failed += bad
                if bad and args.dump is not None:
                    _dump(args.dump / f"{mode}-{seed}.json", want, on_topics, in_clickhouse)
                print(f"{line}  ({note}; {took:.0f} s)", flush=True)
    print("VERDICT:", "FAIL" if failed else "PASS", f"({runs - failed}/{runs} identical)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
