"""The generator: reproducible, realistic funnel rates, bad lines at the asked fraction."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from datetime import date
from pathlib import Path

from streams.core.errors import InvalidEvent
from streams.core.events import parse_line
from streams.definitions_file import load_definitions
from streams.generate import generate
from streams.replay import replay_file

DEFS = load_definitions()


def _generate(seed: int, leads: int = 200, bad: float = 0.0) -> bytes:
    out = io.BytesIO()
    generate(DEFS, out, leads=leads, days=60, seed=seed, start=date(2026, 1, 5), bad_fraction=bad)
    return out.getvalue()


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert _generate(3) == _generate(3)
    assert _generate(3) != _generate(4)


def test_bad_fraction_is_respected_and_good_lines_are_valid() -> None:
    lines = _generate(5, leads=400, bad=0.05).splitlines()
    bad = 0
    for line in lines:
        try:
            parse_line(line)
        except InvalidEvent:
            bad += 1
    assert 0.03 < bad / len(lines) < 0.07


def test_funnel_rates_are_plausible(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(_generate(9, leads=3000))
    replay_file(source, tmp_path / "out", DEFS)
    reached: dict[str, set[str]] = defaultdict(set)
    for line in (tmp_path / "out" / "transitions.jsonl").read_text().splitlines():
        row = json.loads(line)
        for stage in [row["to_stage"], *row["skipped_stages"]]:
            reached[stage].add(row["lead_id"])
    rate = lambda a, b: len(reached[b]) / len(reached[a])  # noqa: E731
    assert 0.10 <= rate("inquiry", "mql") <= 0.25
    assert 0.40 <= rate("mql", "sal") <= 0.60
    assert 0.50 <= rate("sal", "sql") <= 0.70
    assert 0.20 <= rate("sql", "customer") <= 0.30
