"""Attribution golden data (snowplow style): input touches + trigger → expected credits, by hand."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import pytest

from streams.core.attribution import MODELS, AttributionSettings, TouchPoint, Trigger, attribute

CASES = sorted((Path(__file__).parent / "golden" / "attribution").iterdir())


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    touches = [
        TouchPoint(
            t["event_id"],
            datetime.fromisoformat(t["occurred_at"]),
            t["channel"],
            t["campaign_id"],
            t["seq"],
        )
        for t in map(json.loads, (case / "touches.jsonl").read_text().splitlines())
    ]
    raw = json.loads((case / "trigger.json").read_text())
    trigger = Trigger(
        raw["lead_id"],
        raw["opportunity_id"],
        raw["kind"],
        datetime.fromisoformat(raw["at"]),
        raw["amount_minor"],
        raw["currency"],
        _time(raw["inquiry_at"]),
        _time(raw["opportunity_at"]),
        _time(raw["won_at"]),
    )
    got = {
        (c.model, c.touch_event_id or "unattributed"): (c.weight, c.credit_minor)
        for c in attribute(touches, trigger, AttributionSettings(), "golden")
    }
    expected = list(csv.DictReader((case / "expected.csv").open()))
    assert {r["model"] for r in expected} == set(MODELS)
    assert set(got) == {(r["model"], r["touch_event_id"]) for r in expected}
    for row in expected:
        weight, credit = got[(row["model"], row["touch_event_id"])]
        assert credit == int(row["credit_minor"]), (case.name, row)
        assert weight == pytest.approx(float(row["weight"]), abs=1e-6), (case.name, row)
