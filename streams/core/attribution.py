"""Multi-touch attribution exactly as DESIGN.md §4: seven models, integer minor-unit credits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from streams.core.records import AttributionCredit, record_id

MODELS = (
    "first_touch",
    "last_touch",
    "linear",
    "time_decay",
    "position_based",
    "w_shaped",
    "full_path",
)
UNATTRIBUTED = "unattributed"


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    """The attribution section of the definitions."""

    lookback_days: int = 90
    half_life_days: float = 7.0
    models: tuple[str, ...] = MODELS


@dataclass(frozen=True, slots=True)
class TouchPoint:
    """A touch that can earn credit; `seq` is arrival order, the tie-breaker after occurred_at."""

    event_id: str
    occurred_at: datetime
    channel: str
    campaign_id: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class Trigger:
    """What is being credited: an opportunity's pipeline or a won deal's revenue."""

    lead_id: str
    opportunity_id: str
    kind: str  # "opportunity_created" | "deal_won"
    at: datetime
    amount_minor: int
    currency: str
    inquiry_at: datetime | None = None
    opportunity_at: datetime | None = None
    won_at: datetime | None = None


def touches_in_window(
    touches: Sequence[TouchPoint], trigger: Trigger, settings: AttributionSettings
) -> list[TouchPoint]:
    """Touches with trigger_at − lookback ≤ occurred_at ≤ trigger_at, by occurred_at then seq."""
    earliest = trigger.at - timedelta(days=settings.lookback_days)
    window = [t for t in touches if earliest <= t.occurred_at <= trigger.at]
    window.sort(key=lambda t: (t.occurred_at, t.seq))
    return window


def _last_at_or_before(touches: Sequence[TouchPoint], at: datetime | None, default: int) -> int:
    if at is None:
        return default
    found = default
    for index, touch in enumerate(touches):
        if touch.occurred_at <= at:
            found = index
    return found


def _keyed_shares(n: int, keys: Sequence[int], key_share: Fraction) -> list[Fraction]:
    weights = [Fraction(0)] * n
    for key in keys:
        weights[key] += key_share
    distinct = set(keys)
    rest = 1 - key_share * len(keys)
    others = [i for i in range(n) if i not in distinct]
    receivers = others or sorted(distinct)
    for index in receivers:
        weights[index] += rest / len(receivers)
    return weights


def model_weights(
    model: str, touches: Sequence[TouchPoint], trigger: Trigger, settings: AttributionSettings
) -> list[Fraction]:
    """Weights (summing to 1) of the in-window, sorted touches under one model."""
    n = len(touches)
    if n == 0:
        return []
    if model == "first_touch":
        return [Fraction(1)] + [Fraction(0)] * (n - 1)
    if model == "last_touch":
        return [Fraction(0)] * (n - 1) + [Fraction(1)]
    if model == "linear":
        return [Fraction(1, n)] * n
    if model == "time_decay":
        half_life = settings.half_life_days * 86400
        raw = [2.0 ** (-(trigger.at - t.occurred_at).total_seconds() / half_life) for t in touches]
        total = sum(raw)
        return [Fraction(r) / Fraction(total) for r in raw]
    if model == "position_based":
        if n == 1:
            return [Fraction(1)]
        if n == 2:
            return [Fraction(1, 2)] * 2
        middle = Fraction(1, 5) / (n - 2)
        return [Fraction(2, 5)] + [middle] * (n - 2) + [Fraction(2, 5)]
    if model in ("w_shaped", "full_path"):
        first = 0
        lead_key = _last_at_or_before(touches, trigger.inquiry_at, first)
        opportunity_key = _last_at_or_before(touches, trigger.opportunity_at, n - 1)
        if trigger.opportunity_at is None:
            opportunity_key = n - 1
        keys = [first, lead_key, opportunity_key]
        if model == "full_path" and trigger.kind == "deal_won":
            keys.append(_last_at_or_before(touches, trigger.won_at, n - 1))
            return _keyed_shares(n, keys, Fraction(9, 40))
        return _keyed_shares(n, keys, Fraction(3, 10))
    raise ValueError(f"unknown attribution model {model!r}")


def allocate_minor(weights: Sequence[Fraction], amount_minor: int) -> list[int]:
    """floor(weight × amount), then the remainder one unit at a time to the largest fractional
    parts (ties: earlier touch); the result sums exactly to `amount_minor`.

    Integer arithmetic throughout: fractional parts are compared over a common denominator.
    """
    credits = []
    parts = []
    for weight in weights:
        whole, part = divmod(weight.numerator * amount_minor, weight.denominator)
        credits.append(whole)
        parts.append(part)
    remainder = amount_minor - sum(credits)
    if remainder:
        common = math.lcm(*(w.denominator for w in weights))
        scaled = [part * (common // w.denominator) for part, w in zip(parts, weights, strict=True)]
        order = sorted(range(len(scaled)), key=lambda i: (-scaled[i], i))
        for step in range(remainder):
            credits[order[step % len(order)]] += 1
    return credits


def attribute(
    touches: Sequence[TouchPoint],
    trigger: Trigger,
    settings: AttributionSettings,
    definitions_version: str,
) -> tuple[AttributionCredit, ...]:
    """Credits of every configured model for one trigger (an `unattributed` record per model
    when no touch falls in the window)."""
    window = touches_in_window(touches, trigger, settings)
    out: list[AttributionCredit] = []
    for model in settings.models:
        if not window:
            out.append(
                _credit(trigger, model, None, 0, 1.0, trigger.amount_minor, definitions_version)
            )
            continue
        weights = model_weights(model, window, trigger, settings)
        credits = allocate_minor(weights, trigger.amount_minor)
        for index, (touch, weight, credit) in enumerate(zip(window, weights, credits, strict=True)):
            out.append(
                _credit(trigger, model, touch, index, float(weight), credit, definitions_version)
            )
    return tuple(out)


def _credit(
    trigger: Trigger,
    model: str,
    touch: TouchPoint | None,
    index: int,
    weight: float,
    credit: int,
    definitions_version: str,
) -> AttributionCredit:
    touch_id = touch.event_id if touch else None
    return AttributionCredit(
        record_id=record_id(
            trigger.lead_id,
            trigger.opportunity_id,
            trigger.kind,
            model,
            touch_id or UNATTRIBUTED,
            index,
        ),
        lead_id=trigger.lead_id,
        opportunity_id=trigger.opportunity_id,
        trigger=trigger.kind,
        trigger_at=trigger.at,
        model=model,
        touch_event_id=touch_id,
        touch_at=touch.occurred_at if touch else None,
        channel=touch.channel if touch else UNATTRIBUTED,
        campaign_id=touch.campaign_id if touch else None,
        weight=weight,
        credit_minor=credit,
        amount_minor=trigger.amount_minor,
        currency=trigger.currency,
        definitions_version=definitions_version,
    )
