"""`leadflow replay` end to end on a generated file: files, fields, dead letters, determinism."""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.definitions_file import load_definitions
from streams.replay import OUTPUT_FILES, Replayer, _dump, replay_file

DESIGN_FIELDS = {
    "transitions.jsonl": {"lead_id", "from_stage", "to_stage", "at", "event_id"},
    "sla.jsonl": {
        "lead_id",
        "policy",
        "started_at",
        "due_at",
        "status",
        "met_at",
        "breached_at",
        "owner_id",
    },
    "attribution.jsonl": {
        "lead_id",
        "opportunity_id",
        "trigger",
        "model",
        "touch_event_id",
        "channel",
        "campaign_id",
        "weight",
        "credit_minor",
        "currency",
    },
    "lead_states.jsonl": {"lead_id", "stage", "score", "owner_id", "team_id"},
    "dead_letters.jsonl": {"line", "reason", "raw"},
}


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def replayed(generated_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    replay_file(generated_events, out, load_definitions())
    return out


def test_every_file_has_the_design_fields(replayed: Path) -> None:
    for name in OUTPUT_FILES:
        rows = _rows(replayed / name)
        assert rows, name
        assert DESIGN_FIELDS[name] <= set(rows[0]), name


def test_timestamps_are_utc_with_z(replayed: Path) -> None:
    for row in _rows(replayed / "transitions.jsonl")[:50]:
        assert str(row["at"]).endswith("Z")


def test_one_sla_line_per_instance_and_credits_sum_to_amounts(replayed: Path) -> None:
    sla = _rows(replayed / "sla.jsonl")
    assert len({r["instance_id"] for r in sla}) == len(sla)
    assert {r["status"] for r in sla} <= {"open", "met", "breached", "cancelled"}
    sums: dict[tuple[object, ...], int] = {}
    amounts: dict[tuple[object, ...], object] = {}
    for r in _rows(replayed / "attribution.jsonl"):
        key = (r["lead_id"], r["opportunity_id"], r["trigger"], r["model"])
        sums[key] = sums.get(key, 0) + int(r["credit_minor"])  # type: ignore[call-overload]
        amounts[key] = r["amount_minor"]
    assert sums and all(sums[k] == amounts[k] for k in sums)


def test_bad_lines_become_dead_letters_with_line_numbers(
    replayed: Path, generated_events: Path
) -> None:
    lines = generated_events.read_bytes().splitlines()
    for row in _rows(replayed / "dead_letters.jsonl"):
        assert row["reason"]
        assert lines[int(row["line"]) - 1].decode(errors="replace") == row["raw"]  # type: ignore[call-overload]


def test_every_line_is_exactly_the_records_as_dict(generated_events: Path) -> None:
    """The files are written by orjson from the dataclasses directly; the contract is as_dict."""
    emitted: list[Any] = []
    replayer = Replayer(load_definitions(), emitted.append)
    for line_no, raw in enumerate(generated_events.read_bytes().splitlines(), start=1):
        replayer.feed_line(line_no, raw)
    records = [
        *emitted,
        *replayer.lead_latest().values(),
        *replayer.dead_letters,
    ]
    assert {type(r).__name__ for r in records} == {
        "Transition",
        "SlaRecord",
        "AttributionCredit",
        "LeadStateSnapshot",
        "DeadLetter",
    }
    for record in records:
        buffer = io.BytesIO()
        _dump(buffer, record)
        assert json.loads(buffer.getvalue()) == record.as_dict()


def test_replay_is_deterministic(generated_events: Path, replayed: Path, tmp_path: Path) -> None:
    replay_file(generated_events, tmp_path, load_definitions())
    for name in OUTPUT_FILES:
        assert (tmp_path / name).read_bytes() == (replayed / name).read_bytes(), name


def test_replay_leaves_no_garbage_cycles_and_the_collector_on(
    generated_events: Path, tmp_path: Path
) -> None:
    """Replay runs with the cyclic collector off (streams.replay._without_cycle_collection): that
    is only sound while core state and records form no reference cycles."""
    defs = load_definitions()
    gc.collect()
    gc.disable()
    try:
        replay_file(generated_events, tmp_path, defs)
        assert gc.collect() == 0
    finally:
        gc.enable()
    replay_file(generated_events, tmp_path, defs)
    assert gc.isenabled()


def test_cli_prints_a_summary_and_fails_cleanly_on_a_missing_file(
    generated_events: Path, tmp_path: Path
) -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "leadflow",
            "replay",
            "--input",
            str(generated_events),
            "--output-dir",
            str(tmp_path),
            "--until",
            "2026-06-01T00:00:00Z",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "events_per_s" in ok.stderr
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "leadflow",
            "replay",
            "--input",
            str(tmp_path / "nope.jsonl"),
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert "cannot read input file" in missing.stderr
