"""The lifecycle table: forward jumps, off-funnel moves, absorbing stages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.errors import IllegalTransition
from streams.core.lifecycle import Signal, Stage, evolve


def test_forward_jump_records_skipped_stages() -> None:
    move = evolve(Stage.MQL, Signal.OPPORTUNITY)
    assert move is not None
    assert move.to_stage is Stage.OPPORTUNITY
    assert move.skipped == (Stage.SAL, Stage.SQL)
    assert not move.new_episode


def test_signal_for_a_stage_already_passed_is_no_move() -> None:
    assert evolve(Stage.SQL, Signal.ACCEPTED) is None
    assert evolve(Stage.MQL, Signal.MQL) is None


def test_recycled_lead_becoming_mql_again_is_a_new_episode() -> None:
    move = evolve(Stage.RECYCLED, Signal.MQL)
    assert move is not None and move.to_stage is Stage.MQL and move.new_episode


def test_rejection_from_sal_recycles_or_disqualifies() -> None:
    assert evolve(Stage.SAL, Signal.RECYCLE).to_stage is Stage.RECYCLED  # type: ignore[union-attr]
    assert evolve(Stage.SAL, Signal.DISQUALIFY).to_stage is Stage.DISQUALIFIED  # type: ignore[union-attr]


def test_closed_lost_reopens_only_with_a_new_opportunity() -> None:
    move = evolve(Stage.CLOSED_LOST, Signal.OPPORTUNITY)
    assert move is not None and move.to_stage is Stage.OPPORTUNITY and move.new_episode
    with pytest.raises(IllegalTransition):
        evolve(Stage.CLOSED_LOST, Signal.QUALIFIED)


@given(st.sampled_from([Stage.CUSTOMER, Stage.DISQUALIFIED]), st.sampled_from(list(Signal)))
def test_terminal_stages_absorb(stage: Stage, signal: Signal) -> None:
    try:
        move = evolve(stage, signal)
    except IllegalTransition:
        return
    assert move is None
