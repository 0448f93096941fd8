"""The generator: reproducible, realistic funnel rates, bad lines at the asked fraction."""

from __future__ import annotations

import io
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.core.errors import InvalidEvent
from streams.core.events import parse_line
from streams.definitions_file import load_definitions
from streams.generate import FUNNEL_BANDS, generate
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


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3,000 generated leads over 60 days, replayed: (events file, output dir)."""
    tmp_path = tmp_path_factory.mktemp("plausible")
    source = tmp_path / "events.jsonl"
    source.write_bytes(_generate(9, leads=3000))
    replay_file(source, tmp_path / "out", DEFS)
    return source, tmp_path / "out"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_stage_converts_within_its_realistic_band(replayed: tuple[Path, Path]) -> None:
    reached: dict[str, set[str]] = defaultdict(set)
    for row in _rows(replayed[1] / "transitions.jsonl"):
        for stage in [row["to_stage"], *row["skipped_stages"]]:
            reached[stage].add(row["lead_id"])
        if row["from_stage"] == "recycled" and row["to_stage"] == "mql":
            reached["re-mql"].add(row["lead_id"])
    rates = {(a, b): len(reached[a] & reached[b]) / len(reached[a]) for a, b in FUNNEL_BANDS}
    outside = {
        step: round(rate, 3)
        for step, rate in rates.items()
        if not FUNNEL_BANDS[step][0] <= rate <= FUNNEL_BANDS[step][1]
    }
    assert not outside, f"outside their bands {FUNNEL_BANDS}: {outside}"
    assert len(reached["recycled"]) >= 50  # enough recycles for the re-MQL share to mean something


def test_recycled_leads_come_back_later_never_by_the_rejection(
    replayed: tuple[Path, Path],
) -> None:
    recycled_at: dict[str, tuple[datetime, str]] = {}
    gaps_days = []
    for row in _rows(replayed[1] / "transitions.jsonl"):
        at = datetime.fromisoformat(row["at"])
        if row["to_stage"] == "recycled":
            recycled_at[row["lead_id"]] = (at, row["event_id"])
        elif row["from_stage"] == "recycled" and row["to_stage"] == "mql":
            when, rejection = recycled_at[row["lead_id"]]
            assert row["event_id"] != rejection
            gaps_days.append((at - when).days)
    assert gaps_days and min(gaps_days) >= 1
    assert sorted(gaps_days)[len(gaps_days) // 2] >= DEFS.recycle_cooldown_days  # median


def test_last_touches_before_won_deals_spread_over_channels(replayed: tuple[Path, Path]) -> None:
    last = Counter(
        row["channel"]
        for row in _rows(replayed[1] / "attribution.jsonl")
        if row["model"] == "last_touch" and row["trigger"] == "deal_won" and row["weight"] > 0
    )
    total = sum(last.values())
    assert total >= 25  # enough won deals to judge the spread
    assert len(last) >= 5, last
    assert max(last.values()) / total <= 0.4, last


def test_campaign_ids_match_their_touch_dates(replayed: tuple[Path, Path]) -> None:
    checked = 0
    for line in replayed[0].read_bytes().splitlines():
        event = json.loads(line)
        campaign = event.get("campaign_id")
        if not campaign:
            continue
        at = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
        named = re.match(r"cmp-(\d{4})-(?:q(\d)-)?", campaign)
        assert named, campaign
        assert int(named[1]) == at.year, (campaign, event["occurred_at"])
        if named[2]:
            assert int(named[2]) == (at.month - 1) // 3 + 1, (campaign, event["occurred_at"])
            checked += 1
    assert checked > 1000
