"""Lead scoring: fit points from firmographic rules plus engagement points from recent touches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

FIT_OPS = frozenset({"eq", "in", "gte", "lte", "contains"})


@dataclass(frozen=True, slots=True)
class FitRule:
    """`points` when attribute `attribute` satisfies `op` against `value`."""

    attribute: str
    op: str
    value: object
    points: int

    def matches(self, attributes: Mapping[str, object]) -> bool:
        """True when the lead's attribute satisfies this rule (a missing attribute never does)."""
        actual = attributes.get(self.attribute)
        if actual is None:
            return False
        if self.op == "eq":
            return _norm(actual) == _norm(self.value)
        if self.op == "in":
            assert isinstance(self.value, tuple)
            return _norm(actual) in {_norm(v) for v in self.value}
        if self.op == "contains":
            return str(self.value).lower() in str(actual).lower()
        number = _number(actual)
        if number is None:
            return False
        assert isinstance(self.value, int | float)
        return number >= self.value if self.op == "gte" else number <= self.value


def _norm(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _number(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ScoringRules:
    """The scoring section of the definitions."""

    mql_threshold: int
    engagement_window_days: int
    hand_raisers: frozenset[str]
    touch_points: Mapping[str, int]
    fit_rules: tuple[FitRule, ...]


def fit_points(attributes: Mapping[str, object], rules: ScoringRules) -> int:
    """Sum of the points of every fit rule the attributes satisfy."""
    return sum(rule.points for rule in rules.fit_rules if rule.matches(attributes))


def engagement_points(
    touches: Sequence[tuple[str, datetime]], at: datetime, rules: ScoringRules
) -> int:
    """Points of the touches with at − window ≤ occurred_at ≤ at."""
    earliest = at - timedelta(days=rules.engagement_window_days)
    points = rules.touch_points
    return sum(points.get(kind, 0) for kind, when in touches if earliest <= when <= at)


def is_mql(score: int, touch_type: str | None, rules: ScoringRules) -> bool:
    """MQL when the score reaches the threshold or the touch is a hand-raiser."""
    return score >= rules.mql_threshold or (
        touch_type is not None and touch_type in rules.hand_raisers
    )
