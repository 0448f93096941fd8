"""Attribution invariants over random touch sets (hypothesis)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.attribution import MODELS, AttributionSettings, TouchPoint, Trigger, attribute

TRIGGER_AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SETTINGS = AttributionSettings()

touch_lists = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=120 * 24),
        st.sampled_from(["email", "paid_search", "webinar"]),
    ),
    min_size=0,
    max_size=12,
)


def _touches(raw: list[tuple[int, str]]) -> list[TouchPoint]:
    return [
        TouchPoint(f"t{i}", TRIGGER_AT - timedelta(hours=hours), channel, None, i)
        for i, (hours, channel) in enumerate(raw)
    ]


def _trigger(amount: int, kind: str = "deal_won") -> Trigger:
    return Trigger(
        "L1",
        "opp1",
        kind,
        TRIGGER_AT,
        amount,
        "EUR",
        inquiry_at=TRIGGER_AT - timedelta(days=30),
        opportunity_at=TRIGGER_AT - timedelta(days=10),
        won_at=TRIGGER_AT,
    )


@settings(max_examples=200, deadline=None)
@given(
    touch_lists,
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(["deal_won", "opportunity_created"]),
)
def test_credits_sum_exactly_to_the_amount_for_every_model(
    raw: list[tuple[int, str]], amount: int, kind: str
) -> None:
    credits = attribute(_touches(raw), _trigger(amount, kind), SETTINGS, "v")
    for model in MODELS:
        mine = [c for c in credits if c.model == model]
        assert mine, model
        assert sum(c.credit_minor for c in mine) == amount
        assert all(c.credit_minor >= 0 for c in mine)
        assert abs(sum(c.weight for c in mine) - 1.0) < 1e-9


@settings(max_examples=100, deadline=None)
@given(touch_lists, st.integers(min_value=1, max_value=10**7), st.randoms())
def test_input_order_does_not_change_credits(
    raw: list[tuple[int, str]], amount: int, rnd: random.Random
) -> None:
    touches = _touches(raw)
    shuffled = list(touches)
    rnd.shuffle(shuffled)
    key = lambda c: (c.model, c.touch_event_id)  # noqa: E731
    before = sorted(attribute(touches, _trigger(amount), SETTINGS, "v"), key=key)
    after = sorted(attribute(shuffled, _trigger(amount), SETTINGS, "v"), key=key)
    assert [(c.model, c.touch_event_id, c.credit_minor) for c in before] == [
        (c.model, c.touch_event_id, c.credit_minor) for c in after
    ]


def test_no_touches_gives_one_unattributed_record_per_model() -> None:
    credits = attribute([], _trigger(12345), SETTINGS, "v")
    assert len(credits) == len(MODELS)
    assert {c.channel for c in credits} == {"unattributed"}
    assert {c.credit_minor for c in credits} == {12345}
