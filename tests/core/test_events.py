"""Parsing and validating canonical JSON events."""

from __future__ import annotations

import pytest

from streams.core.errors import InvalidEvent
from streams.core.events import event_to_json, parse_event, partition_key, to_minor

BASE = {"event_id": "e1", "occurred_at": "2026-03-02T10:00:00+01:00", "source": "crm"}


def test_valid_event_round_trips_to_canonical_json() -> None:
    obj = {
        **BASE,
        "event_type": "opportunity_created",
        "lead_id": "L1",
        "opportunity_id": "o1",
        "amount": "12.50",
        "currency": "EUR",
    }
    event = parse_event(obj)
    assert event.amount_minor == 1250
    assert event_to_json(event) == {**obj, "occurred_at": "2026-03-02T09:00:00Z"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_type": "teleported"}, "event_type"),
        ({"occurred_at": "2026-03-02T10:00:00"}, "occurred_at"),
        ({"occurred_at": "soon"}, "occurred_at"),
        ({"source": 7}, "source"),
        ({"touch_type": "hug"}, "touch_type"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"sentiment": 0.9}, "sentiment"),
        ({"lead_id": None}, "lead_id"),
    ],
)
def test_invalid_events_name_the_field(change: dict[str, object], field: str) -> None:
    obj = {
        **BASE,
        "event_type": "touch",
        "lead_id": "L1",
        "touch_type": "ad_click",
        "channel": "email",
        **change,
    }
    with pytest.raises(InvalidEvent, match=field):
        parse_event(obj)


def test_amount_with_too_many_decimals_for_the_currency_is_invalid() -> None:
    assert to_minor("1500", "JPY") == 1500
    assert to_minor("1.234", "KWD") == 1234
    with pytest.raises(InvalidEvent, match="amount"):
        to_minor("10.5", "JPY")


def test_partition_key_is_the_lead_or_the_anonymous_id() -> None:
    anon = parse_event(
        {
            **BASE,
            "event_type": "touch",
            "anonymous_id": "A1",
            "touch_type": "ad_click",
            "channel": "email",
        }
    )
    assert partition_key(anon) == "A1"
