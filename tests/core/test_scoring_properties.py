"""MQL decision invariants over random touches and touch points (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams.core.scoring import ScoringRules, engagement_points, is_mql
from streams.core.state import Touch

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KINDS = ["ad_click", "email_open", "form_submit", "demo_request"]

rules_strategy = st.builds(
    ScoringRules,
    mql_threshold=st.integers(min_value=1, max_value=80),
    engagement_window_days=st.integers(min_value=1, max_value=60),
    hand_raisers=st.frozensets(st.sampled_from(KINDS), max_size=1),
    touch_points=st.dictionaries(
        st.sampled_from(KINDS), st.integers(min_value=-40, max_value=40), max_size=len(KINDS)
    ),
    fit_rules=st.just(()),
)
touches_strategy = st.lists(
    st.tuples(st.integers(min_value=-90 * 24, max_value=30 * 24), st.sampled_from(KINDS)),
    max_size=15,
)


@settings(max_examples=500, deadline=None)
@given(
    rules=rules_strategy,
    raw=touches_strategy,
    fit=st.integers(min_value=-40, max_value=80),
    touch_type=st.none() | st.sampled_from(KINDS),
)
@example(  # a negative touch outside the window must not hide the positive one inside it
    rules=ScoringRules(10, 1, frozenset(), {"ad_click": 10, "email_open": -40}, ()),
    raw=[(1, "ad_click"), (-24, "email_open")],
    fit=0,
    touch_type=None,
)
def test_is_mql_is_the_plain_definition(
    rules: ScoringRules, raw: list[tuple[int, str]], fit: int, touch_type: str | None
) -> None:
    """Given any touches (some outside the window, some with negative points) and any rules,
    when the MQL test runs, then it answers exactly as hand-raiser, or fit ≥ threshold, or
    fit + engagement ≥ threshold (its cheap upper bound never changes the answer)."""
    touches = [
        Touch(f"t{i}", AT - timedelta(hours=hours), kind, "email", None, i)
        for i, (hours, kind) in enumerate(raw)
    ]
    plain = (
        (touch_type is not None and touch_type in rules.hand_raisers)
        or fit >= rules.mql_threshold
        or fit + engagement_points(touches, AT, rules) >= rules.mql_threshold
    )
    assert is_mql(fit, touches, AT, touch_type, rules) == plain
