"""The one engine: (lead state, message or clock tick, definitions) → (new state, outputs).

`apply` handles every message addressed to a lead (input events and the identity messages of
streams.core.identity); `tick` fires SLA timers; `next_deadline` says when a tick matters;
`snapshot` is the lead-state record of a state (its `version` counts the changes, so a driver
emits one whenever the version moved: the worker after every change, replay once at the end).
The replay driver and the streaming agents call exactly these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

from streams.core import sla
from streams.core.attribution import TouchPoint, Trigger, attribute
from streams.core.definitions import Definitions
from streams.core.errors import IllegalTransition
from streams.core.events import Event, EventType
from streams.core.identity import Absorb, Forget, Identify, Message, Stitch
from streams.core.lifecycle import Signal, Stage, evolve
from streams.core.records import LeadStateSnapshot, Record, Transition, record_id
from streams.core.scoring import engagement_points, fit_points, is_mql, is_re_mql
from streams.core.state import LeadDraft, LeadState, Touch, remember, touch_of

_SALES_SIGNALS = {
    EventType.LEAD_ACCEPTED: Signal.ACCEPTED,
    EventType.LEAD_QUALIFIED: Signal.QUALIFIED,
    EventType.OPPORTUNITY_CREATED: Signal.OPPORTUNITY,
    EventType.DEAL_WON: Signal.WON,
    EventType.DEAL_LOST: Signal.LOST,
}


class Step(NamedTuple):
    """The result of one engine call (a NamedTuple: one per message, on the hot path).

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
    if type(message) is not Event:
        if isinstance(message, Stitch):
            return _stitch(state, message, defs)
        if isinstance(message, Absorb):
            return _absorb(state, message, defs)
        raise TypeError(f"{type(message).__name__} is addressed to an anonymous key")
    event = message
    lead_id = event.lead_id
    assert lead_id is not None, "anonymous touches go to identity.apply_anonymous"
    if state is None:
        state = LeadState(lead_id)
    if event.event_id in state.seen:
        return Step(state, ignored="duplicate")
    draft = LeadDraft(state)
    at = event.occurred_at
    clock = at if state.clock is None or at > state.clock else state.clock
    draft.seen = remember(state.seen, event.event_id, defs.dedupe_ids_per_lead)
    if state.merged_into is not None:
        forward = event._replace(lead_id=state.merged_into)
        return Step(draft.freeze(), forwards=(forward,), ignored="merged")
    if state.erased:
        return Step(draft.freeze(), ignored="erased")
    draft.clock = clock
    changes = _Changes()
    _apply_event(draft, event, defs, changes)
    return Step(
        draft.freeze(),
        tuple(changes.outputs) if changes.outputs else (),
        tuple(changes.forwards) if changes.forwards else (),
        changes.ignored,
    )


def tick(state: LeadState, now: datetime, defs: Definitions) -> Step:
    """Fire the lead's SLA timers due at or before `now`."""
    if not state.sla:
        return Step(state)
    instances, records = sla.on_tick(state.sla, now, defs)
    if not records and instances == state.sla:
        return Step(state)
    draft = LeadDraft(state)
    draft.sla = instances
    return Step(draft.freeze(), records)


def next_deadline(state: LeadState, defs: Definitions) -> datetime | None:
    """When `tick` would next change this lead (None: nothing pending)."""
    return sla.next_deadline(state.sla, defs) if state.sla else None


def snapshot(state: LeadState, defs: Definitions) -> LeadStateSnapshot | None:
    """The lead-state record of `state` (None while the lead has no stage and no fate).

    The engagement score is taken at the lead's clock (its latest event time).
    """
    if state.stage is None and state.merged_into is None and not state.erased:
        return None
    at = state.clock or state.stage_entered_at or state.created_at
    assert at is not None, "a lead with a stage or a fate has seen a message"
    touches = state.touches
    first = min(touches, key=_touch_order) if touches else None
    engagement = (
        engagement_points(touches, at, defs.scoring, after=state.recycled_at) if touches else 0
    )
    return LeadStateSnapshot(
        record_id=record_id(state.lead_id, "state", state.version),
        lead_id=state.lead_id,
        stage=str(state.stage) if state.stage is not None else "unknown",
        episode=state.episode,
        score=state.fit_score + engagement,
        fit_score=state.fit_score,
        engagement_score=engagement,
        owner_id=state.owner_id,
        team_id=defs.team_of(state.owner_id, state.team_id).id,
        source=state.source,
        first_channel=first.channel if first else None,
        first_campaign_id=first.campaign_id if first else None,
        created_at=state.created_at,
        stage_entered_at=state.stage_entered_at or at,
        updated_at=at,
        erased=state.erased,
        merged_into=state.merged_into,
        version=state.version,
        definitions_version=defs.version,
    )


_touch_order = attrgetter("occurred_at", "seq")


# --- event handling (on a mutable draft; frozen once per call) -----------------------------


def _apply_event(d: LeadDraft, event: Event, defs: Definitions, ch: _Changes) -> None:
    kind = event.event_type
    at = event.occurred_at
    signal: Signal | None = None
    touch_type: str | None = None
    attributes_changed = False
    if kind is EventType.TOUCH:
        d.touches = (*d.touches, touch_of(event, d.next_seq))
        d.next_seq += 1
        if event.anonymous_id:
            d.anonymous_ids = d.anonymous_ids | {event.anonymous_id}
        touch_type = event.touch_type
    elif kind is EventType.LEAD_CREATED:
        d.owner_id = event.owner_id or d.owner_id
        d.team_id = event.team_id or d.team_id
        d.attributes = _merged(d.attributes, event.attributes)
        d.source = event.source
        d.created_at = d.created_at or at
        attributes_changed = True
        signal = Signal.KNOWN
    elif kind is EventType.LEAD_UPDATED:
        d.attributes = _merged(d.attributes, event.attributes)
        attributes_changed = True
    elif kind is EventType.OWNER_ASSIGNED:
        d.team_id = event.team_id or defs.team_of(event.owner_id, None).id
        d.owner_id = event.owner_id
        d.sla = sla.reassign(d.sla, d.owner_id, d.team_id)
    elif kind is EventType.LEAD_IDENTIFIED:
        assert event.anonymous_id is not None
        d.anonymous_ids = d.anonymous_ids | {event.anonymous_id}
        d.created_at = d.created_at or at
        d.source = d.source or event.source
        ch.forwards.append(Identify(event.anonymous_id, d.lead_id, event.event_id, at))
        signal = Signal.KNOWN
    elif kind is EventType.LEAD_MERGED:
        _merge_away(d, event, defs, ch)
        return
    elif kind is EventType.LEAD_ERASED:
        _erase(d, event, defs, ch)
        return
    elif kind is EventType.LEAD_REJECTED:
        signal = Signal.RECYCLE if event.reason in defs.recycle_reasons else Signal.DISQUALIFY
    elif kind in _SALES_SIGNALS:
        signal = _SALES_SIGNALS[kind]
        if kind is EventType.OPPORTUNITY_CREATED:
            d.opportunity_id = event.opportunity_id
            d.opportunity_at = at
    stage_before = d.stage
    if attributes_changed:
        d.fit_score = fit_points(d.attributes, defs.scoring)
    if signal is not None:
        _move(d, signal, event.event_id, at, event.reason, defs, ch)
    _check_mql(d, touch_type, event.event_id, at, defs, ch)
    if d.sla:
        instances, records = sla.on_event(
            d.sla, kind, event.activity_type, at, event.event_id, d.stage or "", defs, d.clock
        )
        ch.outputs.extend(records)
        d.sla = instances
    if d.stage is not None and d.stage != stage_before:
        _start_slas(d, event.event_id, at, defs, ch)
    if (
        kind in (EventType.OPPORTUNITY_CREATED, EventType.DEAL_WON)
        and event.amount_minor is not None
    ):
        ch.outputs.extend(_attribute(d, event, defs))
    _changed(d)


def _merged(
    current: Mapping[str, str | int | float], update: Mapping[str, str | int | float] | None
) -> Mapping[str, str | int | float]:
    merged = dict(current)
    merged.update(update or {})
    return MappingProxyType(merged)


def _move(
    d: LeadDraft,
    signal: Signal,
    event_id: str,
    at: datetime,
    reason: str | None,
    defs: Definitions,
    ch: _Changes,
) -> None:
    try:
        move = evolve(d.stage, signal)
    except IllegalTransition as exc:
        ch.ignored = f"illegal transition: {exc}"
        return
    if move is None:
        return
    episode = max(d.episode, 1) + (1 if move.new_episode else 0)
    off_funnel = move.to_stage in (Stage.RECYCLED, Stage.DISQUALIFIED, Stage.CLOSED_LOST)
    ch.outputs.append(
        Transition(
            record_id=record_id(d.lead_id, event_id, move.to_stage),
            lead_id=d.lead_id,
            from_stage=d.stage,
            to_stage=move.to_stage,
            at=at,
            event_id=event_id,
            skipped_stages=tuple(str(s) for s in move.skipped),
            episode=episode,
            reason=reason if off_funnel else None,
            owner_id=d.owner_id,
            team_id=defs.team_of(d.owner_id, d.team_id).id,
            definitions_version=defs.version,
        )
    )
    d.stage = move.to_stage
    d.episode = episode
    d.stage_entered_at = at
    if move.to_stage is Stage.INQUIRY and d.inquiry_at is None:
        d.inquiry_at = at
    if move.to_stage is Stage.MQL:
        d.mql_at = at
    elif move.to_stage is Stage.RECYCLED:
        d.recycled_at = at


def _check_mql(
    d: LeadDraft,
    touch_type: str | None,
    event_id: str,
    at: datetime,
    defs: Definitions,
    ch: _Changes,
) -> None:
    """Only leads that can become MQL are scored here (most events are for other leads); a
    recycled lead must re-engage (scoring.is_re_mql)."""
    stage = d.stage
    if stage is Stage.INQUIRY:
        if not is_mql(d.fit_score, d.touches, at, touch_type, defs.scoring):
            return
    elif stage is Stage.RECYCLED:
        recycled_at = d.recycled_at or d.stage_entered_at
        assert recycled_at is not None, "a lead with a stage entered it at some time"
        if not is_re_mql(
            d.fit_score, d.touches, at, touch_type, defs.scoring, recycled_at, defs.recycle_cooldown
        ):
            return
    else:
        return
    _move(d, Signal.MQL, event_id, at, None, defs, ch)


def _start_slas(d: LeadDraft, event_id: str, at: datetime, defs: Definitions, ch: _Changes) -> None:
    assert d.stage is not None
    started, records = sla.start_for_stage(
        d.lead_id, d.episode, d.stage, at, d.owner_id, d.team_id, event_id, defs
    )
    if started:
        ch.outputs.extend(records)
        d.sla = (*d.sla, *started)


def _attribute(d: LeadDraft, event: Event, defs: Definitions) -> tuple[Record, ...]:
    assert event.amount_minor is not None and event.currency is not None
    same_opportunity = d.opportunity_id == event.opportunity_id
    trigger = Trigger(
        lead_id=d.lead_id,
        opportunity_id=event.opportunity_id or "",
        kind=str(event.event_type),
        at=event.occurred_at,
        amount_minor=event.amount_minor,
        currency=event.currency,
        inquiry_at=d.inquiry_at,
        opportunity_at=d.opportunity_at if same_opportunity else None,
        won_at=event.occurred_at if event.event_type is EventType.DEAL_WON else None,
    )
    touches = [
        TouchPoint(t.event_id, t.occurred_at, t.channel, t.campaign_id, t.seq) for t in d.touches
    ]
    return attribute(touches, trigger, defs.attribution, defs.version)


def _changed(d: LeadDraft, force: bool = False) -> None:
    """Count a change of a lead with a stage (or a fate: merged, erased) in its version."""
    if d.stage is not None or force:
        d.version += 1


# --- identity steps -------------------------------------------------------------------------


def _begin(
    state: LeadState | None, lead_id: str, key: str, at: datetime, defs: Definitions
) -> tuple[LeadDraft, Step | None]:
    """A draft for an identity message, or the Step to return at once (duplicate/erased)."""
    state = state or LeadState(lead_id)
    if key in state.seen:
        return LeadDraft(state), Step(state, ignored="duplicate")
    d = LeadDraft(state)
    d.seen = remember(d.seen, key, defs.dedupe_ids_per_lead)
    if d.erased:
        return d, Step(d.freeze(), ignored="erased")
    return d, None


def _stitch(state: LeadState | None, message: Stitch, defs: Definitions) -> Step:
    if state is not None and state.merged_into is not None:
        return Step(
            state, forwards=(replace(message, lead_id=state.merged_into),), ignored="merged"
        )
    key = f"stitch:{message.anonymous_id}:{message.event_id}"
    d, done = _begin(state, message.lead_id, key, message.occurred_at, defs)
    if done is not None:
        return done
    ch = _Changes()
    _adopt_touches(d, message.touches, defs)
    _settle(d, message.event_id, message.occurred_at, defs, ch, attributes_changed=False)
    return Step(d.freeze(), tuple(ch.outputs))


def _settle(
    d: LeadDraft,
    event_id: str,
    at: datetime,
    defs: Definitions,
    ch: _Changes,
    attributes_changed: bool,
) -> None:
    """After touches or attributes arrived from another key: rescore, maybe MQL, snapshot."""
    stage_before = d.stage
    if attributes_changed:
        d.fit_score = fit_points(d.attributes, defs.scoring)
    d.clock = d.clock or at
    _check_mql(d, None, event_id, at, defs, ch)
    if d.stage is not None and d.stage != stage_before:
        _start_slas(d, event_id, at, defs, ch)
    _changed(d)


def _adopt_touches(d: LeadDraft, touches: tuple[Touch, ...], defs: Definitions) -> None:
    known = {t.event_id for t in d.touches}
    adopted = []
    for touch in sorted(touches, key=lambda t: (t.occurred_at, t.seq)):
        if touch.event_id not in known:
            adopted.append(touch._replace(seq=d.next_seq))
            d.next_seq += 1
    d.touches = (*d.touches, *adopted)
    for touch in adopted:
        d.seen = remember(d.seen, touch.event_id, defs.dedupe_ids_per_lead)


def _merge_away(d: LeadDraft, event: Event, defs: Definitions, ch: _Changes) -> None:
    survivor = event.survivor_id
    assert survivor is not None
    if survivor == d.lead_id:
        ch.ignored = "merge into itself"
        return
    _, records = sla.on_event(
        d.sla, str(event.event_type), None, event.occurred_at, event.event_id, "merged", defs
    )
    ch.outputs.extend(records)
    ch.forwards.append(Absorb(survivor, d.freeze(), event.event_id, event.occurred_at))
    d.merged_into = survivor
    d.sla = ()
    _changed(d, force=True)


def _absorb(state: LeadState | None, message: Absorb, defs: Definitions) -> Step:
    dup = message.duplicate
    key = f"absorb:{dup.lead_id}:{message.event_id}"
    d, done = _begin(state, message.survivor_id, key, message.occurred_at, defs)
    if done is not None:
        return done
    ch = _Changes()
    at = message.occurred_at
    d.attributes = _merged(dup.attributes, d.attributes)
    d.anonymous_ids = d.anonymous_ids | dup.anonymous_ids
    d.owner_id = d.owner_id or dup.owner_id
    d.team_id = d.team_id or dup.team_id
    d.source = d.source or dup.source
    d.created_at = min(filter(None, (d.created_at, dup.created_at)), default=None)
    for key in dup.seen:
        d.seen = remember(d.seen, key, defs.dedupe_ids_per_lead)
    _adopt_touches(d, dup.touches, defs)
    if d.stage is None and dup.stage is not None:
        _move(d, Signal.KNOWN, message.event_id, at, None, defs, ch)
    _settle(d, message.event_id, at, defs, ch, attributes_changed=True)
    return Step(d.freeze(), tuple(ch.outputs))


def _erase(d: LeadDraft, event: Event, defs: Definitions, ch: _Changes) -> None:
    for anonymous_id in sorted(d.anonymous_ids):
        ch.forwards.append(Forget(anonymous_id, event.event_id))
    d.attributes = MappingProxyType({})
    d.anonymous_ids = frozenset()
    d.erased = True
    _changed(d, force=True)
