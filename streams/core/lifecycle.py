"""The lifecycle as data: funnel stages, a transitions table and one `evolve` function.

A signal (what an event means for the funnel) moves a lead forward, possibly jumping stages
(the skipped ones are recorded), or off the funnel by rejection or loss. Rules a RevOps team
expects, beyond DESIGN.md §4:
- a funnel signal for a stage the lead already reached or passed is no move (`None`);
- `customer` and `disqualified` absorb: any signal there raises `IllegalTransition`;
- `closed_lost` absorbs everything except a new opportunity, which re-opens the lead at
  `opportunity` as a new episode;
- from `recycled`, a funnel signal starts a new episode as if from `inquiry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from streams.core.errors import IllegalTransition


class Stage(StrEnum):
    """Lifecycle stages: the ordered funnel, then the off-funnel stages."""

    INQUIRY = "inquiry"
    MQL = "mql"
    SAL = "sal"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    RECYCLED = "recycled"
    DISQUALIFIED = "disqualified"
    CLOSED_LOST = "closed_lost"


class Signal(StrEnum):
    """What an event means for the funnel."""

    KNOWN = "known"  # lead_created / lead_identified of a new lead
    MQL = "mql"  # score reached the threshold or a hand-raiser touch
    ACCEPTED = "accepted"
    QUALIFIED = "qualified"
    OPPORTUNITY = "opportunity"
    WON = "won"
    LOST = "lost"
    RECYCLE = "recycle"  # rejected with a recycle reason
    DISQUALIFY = "disqualify"  # rejected with any other reason


FUNNEL: tuple[Stage, ...] = (
    Stage.INQUIRY,
    Stage.MQL,
    Stage.SAL,
    Stage.SQL,
    Stage.OPPORTUNITY,
    Stage.CUSTOMER,
)
_RANK = {stage: rank for rank, stage in enumerate(FUNNEL)}

# signal -> target stage for the forward funnel
FORWARD: dict[Signal, Stage] = {
    Signal.KNOWN: Stage.INQUIRY,
    Signal.MQL: Stage.MQL,
    Signal.ACCEPTED: Stage.SAL,
    Signal.QUALIFIED: Stage.SQL,
    Signal.OPPORTUNITY: Stage.OPPORTUNITY,
    Signal.WON: Stage.CUSTOMER,
}
# off-funnel moves: signal -> (stages it may leave, target)
OFF_FUNNEL: dict[Signal, tuple[frozenset[Stage], Stage]] = {
    Signal.RECYCLE: (frozenset({Stage.INQUIRY, Stage.MQL, Stage.SAL, Stage.SQL}), Stage.RECYCLED),
    Signal.DISQUALIFY: (
        frozenset({Stage.INQUIRY, Stage.MQL, Stage.SAL, Stage.SQL, Stage.RECYCLED}),
        Stage.DISQUALIFIED,
    ),
    Signal.LOST: (
        frozenset(
            {Stage.INQUIRY, Stage.MQL, Stage.SAL, Stage.SQL, Stage.OPPORTUNITY, Stage.RECYCLED}
        ),
        Stage.CLOSED_LOST,
    ),
}
ABSORBING = frozenset({Stage.CUSTOMER, Stage.DISQUALIFIED})


@dataclass(frozen=True, slots=True)
class Move:
    """A stage change: where to, which funnel stages were jumped over, whether a new episode."""

    to_stage: Stage
    skipped: tuple[Stage, ...]
    new_episode: bool


def evolve(stage: Stage | None, signal: Signal) -> Move | None:
    """The move a signal causes from `stage` (None: the lead is not known yet); None = no move.

    Raises IllegalTransition for a signal an absorbing stage cannot take.
    """
    if stage is None:
        if signal in FORWARD:
            target = FORWARD[signal]
            return Move(
                target, FUNNEL[: _RANK[target]] if target is not Stage.INQUIRY else (), False
            )
        if signal is Signal.LOST:
            return Move(Stage.CLOSED_LOST, (), False)
        return None
    if stage in ABSORBING:
        if signal in (Signal.KNOWN, Signal.MQL) or (
            stage is Stage.CUSTOMER and signal is Signal.WON
        ):
            return None
        raise IllegalTransition(f"a {stage} lead cannot take {signal}")
    if stage is Stage.CLOSED_LOST:
        if signal is Signal.OPPORTUNITY:
            return Move(Stage.OPPORTUNITY, (), True)
        if signal in (Signal.KNOWN, Signal.MQL, Signal.LOST):
            return None
        raise IllegalTransition(
            f"a closed_lost lead cannot take {signal}; create a new opportunity"
        )
    if signal in OFF_FUNNEL:
        allowed, target = OFF_FUNNEL[signal]
        if stage in allowed:
            return Move(target, (), False)
        raise IllegalTransition(f"a {stage} lead cannot take {signal}")
    target = FORWARD[signal]
    if stage is Stage.RECYCLED:
        if target is Stage.INQUIRY:
            return None
        return Move(target, FUNNEL[_RANK[Stage.MQL] : _RANK[target]], True)
    if _RANK[target] <= _RANK[stage]:
        return None
    return Move(target, FUNNEL[_RANK[stage] + 1 : _RANK[target]], False)
