"""The default demo's data against the packaged definitions: marketing's SLA both met and missed."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from leadflow.commands.demo import (
    DEMO_BAD_FRACTION,
    DEMO_DAYS,
    DEMO_LEADS,
    DEMO_SEED,
    DEMO_START,
)
from streams.definitions_file import load_definitions
from streams.generate import generate
from streams.replay import replay_file


def test_the_default_demo_shows_met_and_missed_weeks_for_every_team(tmp_path: Path) -> None:
    # Given the demo's generated events and the packaged definitions
    defs = load_definitions()
    events = tmp_path / "events.jsonl"
    with open(events, "wb") as out:
        generate(
            defs,
            out,
            leads=DEMO_LEADS,
            days=DEMO_DAYS,
            seed=DEMO_SEED,
            start=DEMO_START,
            bad_fraction=DEMO_BAD_FRACTION,
        )
    # When they are replayed
    replay_file(events, tmp_path / "out", defs)
    # Then, in the weeks leads arrive, each team meets its weekly MQL target in some weeks
    # and misses it in others
    window_end = datetime(DEMO_START.year, DEMO_START.month, DEMO_START.day, tzinfo=UTC)
    window_end += timedelta(days=DEMO_DAYS)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in (tmp_path / "out" / "sla.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["policy"] != "mql_weekly_target":
            continue
        if datetime.fromisoformat(row["started_at"]) + timedelta(days=7) <= window_end:
            outcomes[row["team_id"]][row["status"]] += 1
    assert set(outcomes) == set(defs.teams)
    for team, counts in outcomes.items():
        weeks = counts["met"] + counts["breached"]
        assert weeks >= 10, (team, dict(counts))
        assert 0.25 <= counts["met"] / weeks <= 0.75, (team, dict(counts))
