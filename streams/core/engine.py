"""The one engine: (lead state, message or clock tick, definitions) → (new state, outputs).

`apply` handles every message addressed to a lead (input events and the identity messages of
streams.core.identity); `tick` fires SLA timers; `next_deadline` says when a tick matters. The
replay driver and the streaming agents call exactly these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType

from streams.core import sla
from streams.core.attribution import TouchPoint, Trigger, attribute
from streams.core.definitions import Definitions
from streams.core.errors import IllegalTransition
from streams.core.events import Event, EventType
from streams.core.identity import Absorb, Forget, Identify, Message, Stitch
from streams.core.lifecycle import Signal, Stage, evolve
from streams.core.records import LeadStateSnapshot, Record, Transition, record_id
from streams.core.scoring import engagement_points, fit_points, is_mql
from streams.core.state import LeadState, Touch

_SALES_SIGNALS = {
    EventType.LEAD_ACCEPTED: Signal.ACCEPTED,
    EventType.LEAD_QUALIFIED: Signal.QUALIFIED,
    EventType.OPPORTUNITY_CREATED: Signal.OPPORTUNITY,
    EventType.DEAL_WON: Signal.WON,
    EventType.DEAL_LOST: Signal.LOST,
}
_MQL_ELIGIBLE = (Stage.INQUIRY, Stage.RECYCLED)


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one engine call.

    `forwards` are messages for other keys (see streams.core.identity); `ignored` names why an
    event changed nothing (duplicate, illegal move, erased lead), for counting.
    """

    state: LeadState | None
    outputs: tuple[Record, ...] = ()
    forwards: tuple[Message, ...] = ()
    ignored: str | None = None


class _Changes:
    """Outputs collected while one message is applied."""

    __slots__ = ("outputs", "forwards", "ignored")

    def __init__(self) -> None:
        self.outputs: list[Record] = []
        self.forwards: list[Message] = []
        self.ignored: str | None = None


def apply(state: LeadState | None, message: Message, defs: Definitions) -> Step:
    """Apply one message addressed to a lead."""
    if isinstance(message, Stitch):
        return _stitch(state, message, defs)
    if isinstance(message, Absorb):
        return _absorb(state, message, defs)
    if isinstance(message, Identify | Forget):
        raise TypeError(f"{type(message).__name__} is addressed to an anonymous key")
    event = message
    lead_id = event.lead_id
    assert lead_id is not None, "anonymous touches go to identity.apply_anonymous"
    if state is None:
        state = LeadState(lead_id)
    if event.event_id in state.seen:
        return Step(state, ignored="duplicate")
    state = replace(state, seen=state.seen | {event.event_id})
    if state.merged_into is not None:
        return Step(state, forwards=(replace(event, lead_id=state.merged_into),), ignored="merged")
    if state.erased:
        return Step(state, ignored="erased")
    clock = event.occurred_at if state.clock is None else max(state.clock, event.occurred_at)
    state = replace(state, clock=clock)
    changes = _Changes()
    state = _apply_event(state, event, defs, changes)
    return Step(state, tuple(changes.outputs), tuple(changes.forwards), changes.ignored)


def tick(state: LeadState, now: datetime, defs: Definitions) -> Step:
    """Fire the lead's SLA timers due at or before `now`."""
    if not state.sla:
        return Step(state)
    instances, records = sla.on_tick(state.sla, now, defs)
    if not records and instances == state.sla:
        return Step(state)
    return Step(replace(state, sla=instances), records)


def next_deadline(state: LeadState, defs: Definitions) -> datetime | None:
    """When `tick` would next change this lead (None: nothing pending)."""
    return sla.next_deadline(state.sla, defs) if state.sla else None


# --- event handling -------------------------------------------------------------------------


def _apply_event(state: LeadState, event: Event, defs: Definitions, ch: _Changes) -> LeadState:
    kind = event.event_type
    at = event.occurred_at
    signal: Signal | None = None
    touch_type: str | None = None
    if kind is EventType.TOUCH:
        touch = Touch(
            event.event_id, at, event.touch_type or "", event.channel or "other", event.campaign_id,
            state.next_seq,
        )
        state = replace(state, touches=(*state.touches, touch), next_seq=state.next_seq + 1)
        if event.anonymous_id:
            state = replace(state, anonymous_ids=state.anonymous_ids | {event.anonymous_id})
        touch_type = event.touch_type
    elif kind is EventType.LEAD_CREATED:
        state = replace(
            state,
            owner_id=event.owner_id or state.owner_id,
            team_id=event.team_id or state.team_id,
            attributes=_merged(state, event),
            source=event.source,
            created_at=state.created_at or at,
        )
        signal = Signal.KNOWN
    elif kind is EventType.LEAD_UPDATED:
        state = replace(state, attributes=_merged(state, event))
    elif kind is EventType.OWNER_ASSIGNED:
        team_id = event.team_id or defs.team_of(event.owner_id, None).id
        state = replace(
            state,
            owner_id=event.owner_id,
            team_id=team_id,
            sla=sla.reassign(state.sla, event.owner_id, team_id),
        )
    elif kind is EventType.LEAD_IDENTIFIED:
        assert event.anonymous_id is not None
        state = replace(
            state,
            anonymous_ids=state.anonymous_ids | {event.anonymous_id},
            created_at=state.created_at or at,
            source=state.source or event.source,
        )
        ch.forwards.append(Identify(event.anonymous_id, state.lead_id, event.event_id, at))
        signal = Signal.KNOWN
    elif kind is EventType.LEAD_MERGED:
        return _merge_away(state, event, defs, ch)
    elif kind is EventType.LEAD_ERASED:
        return _erase(state, event, defs, ch)
    elif kind is EventType.LEAD_REJECTED:
        recycle = event.reason in defs.recycle_reasons
        signal = Signal.RECYCLE if recycle else Signal.DISQUALIFY
    elif kind in _SALES_SIGNALS:
        signal = _SALES_SIGNALS[kind]
        if kind is EventType.OPPORTUNITY_CREATED:
            state = replace(state, opportunity_id=event.opportunity_id, opportunity_at=at)
    stage_before = state.stage
    state = _rescore(state, at, defs)
    if signal is not None:
        state = _move(state, signal, event.event_id, at, event.reason, defs, ch)
    state = _check_mql(state, touch_type, event.event_id, at, defs, ch)
    instances, records = sla.on_event(
        state.sla, kind, event.activity_type, at, event.event_id, state.stage or "", defs, state.clock
    )
    ch.outputs.extend(records)
    state = replace(state, sla=instances)
    if state.stage is not None and state.stage != stage_before:
        state = _start_slas(state, event.event_id, at, defs, ch)
    if kind in (EventType.OPPORTUNITY_CREATED, EventType.DEAL_WON) and event.amount_minor is not None:
        ch.outputs.extend(_attribute(state, event, defs))
    return _snapshot(state, at, defs, ch)


def _merged(state: LeadState, event: Event) -> MappingProxyType[str, str | int | float]:
    merged = dict(state.attributes)
    merged.update(event.attributes or {})
    return MappingProxyType(merged)


def _rescore(state: LeadState, at: datetime, defs: Definitions) -> LeadState:
    rules = defs.scoring
    fit = fit_points(state.attributes, rules)
    engagement = engagement_points([(t.touch_type, t.occurred_at) for t in state.touches], at, rules)
    if fit == state.fit_score and engagement == state.engagement_score:
        return state
    return replace(state, fit_score=fit, engagement_score=engagement)


def _move(
    state: LeadState,
    signal: Signal,
    event_id: str,
    at: datetime,
    reason: str | None,
    defs: Definitions,
    ch: _Changes,
) -> LeadState:
    try:
        move = evolve(state.stage, signal)
    except IllegalTransition as exc:
        ch.ignored = f"illegal transition: {exc}"
        return state
    if move is None:
        return state
    episode = max(state.episode, 1) + (1 if move.new_episode else 0)
    ch.outputs.append(
        Transition(
            record_id=record_id(state.lead_id, event_id, move.to_stage),
            lead_id=state.lead_id,
            from_stage=state.stage,
            to_stage=move.to_stage,
            at=at,
            event_id=event_id,
            skipped_stages=tuple(str(s) for s in move.skipped),
            episode=episode,
            reason=reason if move.to_stage in (Stage.RECYCLED, Stage.DISQUALIFIED, Stage.CLOSED_LOST) else None,
            owner_id=state.owner_id,
            team_id=defs.team_of(state.owner_id, state.team_id).id,
            definitions_version=defs.version,
        )
    )
    return replace(
        state,
        stage=move.to_stage,
        episode=episode,
        stage_entered_at=at,
        inquiry_at=state.inquiry_at or (at if move.to_stage is Stage.INQUIRY else None),
        mql_at=at if move.to_stage is Stage.MQL else state.mql_at,
    )


def _check_mql(
    state: LeadState, touch_type: str | None, event_id: str, at: datetime, defs: Definitions, ch: _Changes
) -> LeadState:
    if state.stage not in _MQL_ELIGIBLE:
        return state
    if not is_mql(state.score, touch_type, defs.scoring):
        return state
    return _move(state, Signal.MQL, event_id, at, None, defs, ch)


def _start_slas(state: LeadState, event_id: str, at: datetime, defs: Definitions, ch: _Changes) -> LeadState:
    assert state.stage is not None
    started, records = sla.start_for_stage(
        state.lead_id, state.episode, state.stage, at, state.owner_id, state.team_id, event_id, defs
    )
    if not started:
        return state
    ch.outputs.extend(records)
    return replace(state, sla=(*state.sla, *started))


def _attribute(state: LeadState, event: Event, defs: Definitions) -> tuple[Record, ...]:
    assert event.amount_minor is not None and event.currency is not None
    kind = str(event.event_type)
    same_opportunity = state.opportunity_id == event.opportunity_id
    trigger = Trigger(
        lead_id=state.lead_id,
        opportunity_id=event.opportunity_id or "",
        kind=kind,
        at=event.occurred_at,
        amount_minor=event.amount_minor,
        currency=event.currency,
        inquiry_at=state.inquiry_at,
        opportunity_at=state.opportunity_at if same_opportunity else None,
        won_at=event.occurred_at if event.event_type is EventType.DEAL_WON else None,
    )
    touches = [TouchPoint(t.event_id, t.occurred_at, t.channel, t.campaign_id, t.seq) for t in state.touches]
    return attribute(touches, trigger, defs.attribution, defs.version)


def _snapshot(state: LeadState, at: datetime, defs: Definitions, ch: _Changes, force: bool = False) -> LeadState:
    if state.stage is None and not force:
        return state
    state = replace(state, version=state.version + 1)
    first = min(state.touches, key=lambda t: (t.occurred_at, t.seq)) if state.touches else None
    ch.outputs.append(
        LeadStateSnapshot(
            record_id=record_id(state.lead_id, "state", state.version),
            lead_id=state.lead_id,
            stage=str(state.stage) if state.stage is not None else "unknown",
            episode=state.episode,
            score=state.score,
            fit_score=state.fit_score,
            engagement_score=state.engagement_score,
            owner_id=state.owner_id,
            team_id=defs.team_of(state.owner_id, state.team_id).id,
            source=state.source,
            first_channel=first.channel if first else None,
            first_campaign_id=first.campaign_id if first else None,
            created_at=state.created_at,
            stage_entered_at=state.stage_entered_at or at,
            updated_at=state.clock or at,
            erased=state.erased,
            merged_into=state.merged_into,
            version=state.version,
            definitions_version=defs.version,
        )
    )
    return state


# --- identity steps -------------------------------------------------------------------------


def _stitch(state: LeadState | None, message: Stitch, defs: Definitions) -> Step:
    key = f"stitch:{message.anonymous_id}:{message.event_id}"
    if state is None:
        state = LeadState(message.lead_id)
    if key in state.seen:
        return Step(state, ignored="duplicate")
    if state.merged_into is not None:
        return Step(state, forwards=(replace(message, lead_id=state.merged_into),), ignored="merged")
    state = replace(state, seen=state.seen | {key})
    if state.erased:
        return Step(state, ignored="erased")
    ch = _Changes()
    state = _adopt_touches(state, message.touches)
    at = message.occurred_at
    state = _rescore(state, at, defs)
    state = _check_mql(state, None, message.event_id, at, defs, ch)
    state = _start_if_entered(state, ch, message.event_id, at, defs)
    state = _snapshot(state, at, defs, ch)
    return Step(state, tuple(ch.outputs))


def _adopt_touches(state: LeadState, touches: tuple[Touch, ...]) -> LeadState:
    known = {t.event_id for t in state.touches}
    seq = state.next_seq
    adopted = []
    for touch in sorted(touches, key=lambda t: (t.occurred_at, t.seq)):
        if touch.event_id in known:
            continue
        adopted.append(replace(touch, seq=seq))
        seq += 1
    return replace(
        state,
        touches=(*state.touches, *adopted),
        next_seq=seq,
        seen=state.seen | {t.event_id for t in adopted},
    )


def _start_if_entered(state: LeadState, ch: _Changes, event_id: str, at: datetime, defs: Definitions) -> LeadState:
    moved = [o for o in ch.outputs if isinstance(o, Transition)]
    if moved and state.stage is not None:
        return _start_slas(state, event_id, at, defs, ch)
    return state


def _merge_away(state: LeadState, event: Event, defs: Definitions, ch: _Changes) -> LeadState:
    survivor = event.survivor_id
    assert survivor is not None
    if survivor == state.lead_id:
        ch.ignored = "merge into itself"
        return state
    instances, records = sla.on_event(
        state.sla, str(event.event_type), None, event.occurred_at, event.event_id, "merged", defs
    )
    ch.outputs.extend(records)
    ch.forwards.append(Absorb(survivor, state, event.event_id, event.occurred_at))
    state = replace(state, merged_into=survivor, sla=())
    return _snapshot(state, event.occurred_at, defs, ch, force=True)


def _absorb(state: LeadState | None, message: Absorb, defs: Definitions) -> Step:
    key = f"absorb:{message.duplicate.lead_id}:{message.event_id}"
    if state is None:
        state = LeadState(message.survivor_id)
    if key in state.seen:
        return Step(state, ignored="duplicate")
    state = replace(state, seen=state.seen | {key})
    if state.erased:
        return Step(state, ignored="erased")
    dup = message.duplicate
    ch = _Changes()
    at = message.occurred_at
    attributes = dict(dup.attributes)
    attributes.update(state.attributes)
    state = replace(
        state,
        attributes=MappingProxyType(attributes),
        anonymous_ids=state.anonymous_ids | dup.anonymous_ids,
        owner_id=state.owner_id or dup.owner_id,
        team_id=state.team_id or dup.team_id,
        source=state.source or dup.source,
        created_at=min(filter(None, (state.created_at, dup.created_at)), default=None),
        seen=state.seen | dup.seen,
    )
    state = _adopt_touches(state, dup.touches)
    if state.stage is None and dup.stage is not None:
        state = _move(state, Signal.KNOWN, message.event_id, at, None, defs, ch)
    state = _rescore(state, at, defs)
    state = _check_mql(state, None, message.event_id, at, defs, ch)
    state = _start_if_entered(state, ch, message.event_id, at, defs)
    state = _snapshot(state, at, defs, ch)
    return Step(state, tuple(ch.outputs))


def _erase(state: LeadState, event: Event, defs: Definitions, ch: _Changes) -> LeadState:
    for anonymous_id in sorted(state.anonymous_ids):
        ch.forwards.append(Forget(anonymous_id, event.event_id))
    state = replace(
        state,
        attributes=MappingProxyType({}),
        anonymous_ids=frozenset(),
        erased=True,
    )
    return _snapshot(state, event.occurred_at, defs, ch, force=True)
