"""The one engine: (lead state, message or clock tick, definitions) → (new state, outputs).

`apply` handles every message addressed to a lead (input events and the identity messages of
streams.core.identity); `tick` fires SLA timers; `next_deadline` says when a tick matters;
`snapshot` is the lead-state record of a state (its `version` counts the changes, so a driver
emits one whenever the version moved: the worker after every change, replay once at the end).
The replay driver and the streaming agents call exactly these functions.

Event time, not arrival: a lead is the fold of its history, the entries (its events, and the
states of duplicates merged into it) in the total order `entry_key` — occurred_at, a fixed
event-type rank, the event id — with each SLA timer firing at its scheduled instant between
them. An entry that sorts after everything applied (and after every timer that fired) is
applied on top (the common case, no re-fold). One that sorts earlier is merged into its place
and the history is folded again; the outputs that change are emitted as upserts, SLA outcomes
that change as `corrected`, and records that no longer hold as retractions (`deleted`). So the
final outputs depend on the set of events and their times only, not on the order in which the
upstream systems' records arrived. Beyond `lifecycle.history_max_entries` entries, the older
half of a lead's history is folded into `base`; an event older than that is refused ("late",
a dead letter for the driver).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from operator import attrgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from streams.core import sla
from streams.core.attribution import TouchPoint, Trigger, attribute
from streams.core.definitions import Definitions
from streams.core.errors import IllegalTransition
from streams.core.events import Event, EventType
from streams.core.identity import Absorb, Forget, Identify, Message, Stitch
from streams.core.lifecycle import Signal, Stage, evolve
from streams.core.records import (
    AttributionCredit,
    LeadStateSnapshot,
    Record,
    SlaRecord,
    Transition,
    iso_z,
    record_id,
)
from streams.core.scoring import engagement_points, fit_points, is_mql, is_re_mql
from streams.core.state import LeadDraft, LeadState, Touch, remember, touch_of

if TYPE_CHECKING:
    from streams.core.state import Entry

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
    """Apply one message addressed to a lead, in its event-time place (module docstring)."""
    if type(message) is Event:
        lead_id = message.lead_id
        assert lead_id is not None, "anonymous touches go to identity.apply_anonymous"
        if state is not None and state.history and message.event_id not in state.seen:
            at = message.occurred_at
            timer_at = state.timer_at
            if (
                at > state.history[-1].occurred_at
                and (timer_at is None or at > timer_at)
                and state.merged_into is None
                and not state.erased
                and message.event_type is not EventType.LEAD_IDENTIFIED
            ):
                return _append_event(state, message, defs)  # the hot path: in order
        return _admit(state, lead_id, message, message.event_id, defs)
    if isinstance(message, Absorb):
        return _admit(state, message.survivor_id, message, _entry_id(message), defs)
    if isinstance(message, Stitch):
        return _apply_all(state, message.lead_id, stitched_touches(message), defs)
    raise TypeError(f"{type(message).__name__} is addressed to an anonymous key")


def stitched_touches(message: Stitch) -> list[Event]:
    """The touch events an anonymous visitor made, now addressed to the lead it turned out to be."""
    return [
        Event(
            t.event_id,
            EventType.TOUCH,
            t.occurred_at,
            "stitched",
            lead_id=message.lead_id,
            anonymous_id=message.anonymous_id,
            touch_type=t.touch_type,
            channel=t.channel,
            campaign_id=t.campaign_id,
        )
        for t in message.touches
    ]


def _apply_all(
    state: LeadState | None, lead_id: str, events: list[Event], defs: Definitions
) -> Step:
    """Several events of one lead at once (a stitch): appended one by one while they sort
    last, else merged into the history together and folded once."""
    state = state or LeadState(lead_id)
    fresh = sorted((e for e in events if e.event_id not in state.seen), key=entry_key)
    if not fresh:
        return Step(state, ignored="duplicate")
    last = state.history[-1] if state.history else None
    sorts_last = (last is None or entry_key(fresh[0]) > entry_key(last)) and (
        state.timer_at is None or fresh[0].occurred_at > state.timer_at
    )
    if state.erased or state.merged_into is not None or sorts_last:
        outputs: list[Record] = []
        forwards: list[Message] = []
        ignored = None
        current: LeadState | None = state
        for event in fresh:
            step = apply(current, event, defs)
            current = step.state
            outputs.extend(step.outputs)
            forwards.extend(step.forwards)
            ignored = ignored or step.ignored
        return Step(current, tuple(outputs), tuple(forwards), None if outputs else ignored)
    if state.horizon_at is not None and fresh[0].occurred_at <= state.horizon_at:
        late = [e for e in fresh if e.occurred_at <= state.horizon_at]
        rest = [e for e in fresh if e.occurred_at > state.horizon_at]
        step = _apply_all(state, lead_id, rest, defs) if rest else Step(state)
        reason = apply(step.state, late[0], defs).ignored
        return Step(step.state, step.outputs, step.forwards, reason)
    history = tuple(sorted((*state.history, *fresh), key=entry_key))
    seen = state.seen
    for event in fresh:
        seen = remember(seen, event.event_id, defs.dedupe_ids_per_lead)
    if _adopted_at_last_identification(state, fresh):
        # the usual stitch: the visitor's touches, all before its identification, arrive right
        # after it; the fold would adopt them there, so adopt them on top (no re-fold)
        last = state.history[-1]
        draft = LeadDraft(state)
        changes = _Changes()
        _adopt_touches(draft, tuple(touch_of(e, 0) for e in fresh))
        _settle(draft, _entry_id(last), last.occurred_at, defs, changes, attributes_changed=False)
        draft.history = history
        draft.seen = seen
        _compact(draft, defs)
        _stamp(draft, changes.outputs)
        return Step(draft.freeze(), tuple(changes.outputs))
    return _refolded(state, history, seen, fresh[-1].occurred_at, defs)


def _adopted_at_last_identification(state: LeadState, touches: list[Event]) -> bool:
    """True when the lead's last entry identifies the visitor of `touches`, they all sort
    before it, and no timer fired since: the fold holds them until it and adopts them there."""
    if not state.history:
        return False
    last = state.history[-1]
    if type(last) is not Event or last.event_type is not EventType.LEAD_IDENTIFIED:
        return False
    if state.timer_at is not None and state.timer_at >= last.occurred_at:
        return False
    if (
        sum(
            1
            for e in state.history
            if type(e) is Event
            and e.event_type is EventType.LEAD_IDENTIFIED
            and e.anonymous_id == last.anonymous_id
        )
        != 1
    ):
        return False
    order = entry_key(last)
    return all(e.anonymous_id == last.anonymous_id and entry_key(e) < order for e in touches)


def tick(state: LeadState, now: datetime, defs: Definitions) -> Step:
    """Fire the lead's SLA timers due at or before `now`."""
    if not state.sla:
        return Step(state)
    ticked, records = _tick(state, now, defs)
    if ticked is state:
        return Step(state)
    return _finish(ticked, records, (), None)


def _tick(
    state: LeadState, now: datetime, defs: Definitions
) -> tuple[LeadState, tuple[SlaRecord, ...]]:
    """`tick` without stamping revisions (the fold's ticks)."""
    instances, records = sla.on_tick(state.sla, now, defs)
    if not records and instances == state.sla:
        return state, ()
    draft = LeadDraft(state)
    draft.sla = instances
    fired = sla.fired_until(state.sla, records, instances, defs)
    if fired is not None and (draft.timer_at is None or fired > draft.timer_at):
        draft.timer_at = fired
    if len(instances) < len(state.sla):  # dropped past the correction window: not rewindable
        kept = {i.instance_id for i in instances}
        window = defs.correction_window
        for inst in state.sla:
            dropped = inst.breach_at + window
            if inst.instance_id not in kept and (
                draft.dropped_at is None or dropped > draft.dropped_at
            ):
                draft.dropped_at = dropped
    return draft.freeze(), records


# --- event time: a lead is the fold of its history ------------------------------------------

_EPSILON = timedelta(microseconds=1)
# The tie-break of events at the same instant: the order the funnel expects them in.
_RANK = {
    EventType.LEAD_CREATED: 0,
    EventType.LEAD_IDENTIFIED: 1,
    EventType.OWNER_ASSIGNED: 2,
    EventType.LEAD_UPDATED: 3,
    EventType.TOUCH: 4,
    EventType.ACTIVITY: 5,
    EventType.LEAD_ACCEPTED: 6,
    EventType.LEAD_QUALIFIED: 7,
    EventType.OPPORTUNITY_CREATED: 8,
    EventType.DEAL_WON: 9,
    EventType.DEAL_LOST: 10,
    EventType.LEAD_REJECTED: 11,
    EventType.LEAD_MERGED: 12,
    EventType.LEAD_ERASED: 13,
}
_ABSORB_RANK = _RANK[EventType.LEAD_MERGED]


def _entry_id(entry: Entry) -> str:
    if type(entry) is Event:
        return entry.event_id
    assert isinstance(entry, Absorb)
    return f"absorb:{entry.duplicate.lead_id}:{entry.event_id}"


def entry_key(entry: Entry) -> tuple[datetime, int, str]:
    """The total order of a lead's history: occurred_at, then a fixed event-type rank, then
    the event id; never arrival."""
    if type(entry) is Event:
        return (entry.occurred_at, _RANK[entry.event_type], entry.event_id)
    assert isinstance(entry, Absorb)
    return (entry.occurred_at, _ABSORB_RANK, _entry_id(entry))


def _admit(
    state: LeadState | None, lead_id: str, entry: Entry, key: str, defs: Definitions
) -> Step:
    """Dedupe `entry`, then append it (the fast path: it sorts after everything applied and
    after every timer that fired) or merge it into its place and re-fold (the slow path)."""
    if state is None:
        state = LeadState(lead_id)
    replaced: Entry | None = None
    if key in state.seen:
        if type(entry) is Event:
            return Step(state, ignored="duplicate")
        replaced = next((e for e in state.history if _entry_id(e) == key), None)
        if replaced is None or replaced == entry:
            return Step(state, ignored="duplicate")
    if state.erased:
        if type(entry) is not Event or entry.event_type in _PERSONAL:
            draft = LeadDraft(state)
            draft.seen = remember(state.seen, key, defs.dedupe_ids_per_lead)
            return Step(draft.freeze(), ignored="erased")
        anonymous_id = entry.anonymous_id
        if (
            entry.event_type is EventType.LEAD_IDENTIFIED
            and anonymous_id
            and not anonymous_id.startswith("erased:")
        ):
            # the visitor's touches go to the erased lead (as anonymous as it is now)
            forget = Forget(anonymous_id, entry.event_id, lead_id)
            step = _admit(state, lead_id, _anonymised_event(entry, None), key, defs)
            return step._replace(forwards=(forget, *step.forwards))
        entry = _anonymised_event(entry, None)
    at = entry.occurred_at
    if state.horizon_at is not None and at <= state.horizon_at:
        return Step(
            state,
            ignored=f"late: occurred at {iso_z(at)}, at or before the lead's lateness horizon "
            f"{iso_z(state.horizon_at)} (lifecycle.history_max_entries)",
        )
    history = state.history
    if history:
        last_at = history[-1].occurred_at  # the common case decided by time alone
        sorts_last = at > last_at or (at == last_at and entry_key(entry) > entry_key(history[-1]))
    else:
        sorts_last = True
    in_order = (
        sorts_last
        and replaced is None
        and (state.timer_at is None or at > state.timer_at)
        and (
            type(entry) is not Event
            or entry.event_type is not EventType.LEAD_IDENTIFIED
            or not _identifies_held_touches(entry, history)
        )
    )
    if in_order:
        return _append(state, entry, key, defs)
    if sorts_last and replaced is None and type(entry) is Event:
        rewound = _rewound_append(state, entry, key, defs)
        if rewound is not None:
            return rewound
    return _refold(state, entry, key, replaced, defs)


def _rewound_append(state: LeadState, event: Event, key: str, defs: Definitions) -> Step | None:
    """An event that sorts after the lead's history but before timers that fired (the clock ran
    ahead of it, e.g. a live deadline before a CRM sync): the timers from its time on are
    rewound, the event applied, the timers fired again, and what changed emitted — as a
    re-fold would, without folding the history again. None when it cannot be rewound (a
    breach was dropped past the correction window since, or the lead is not live)."""
    at = event.occurred_at
    if (
        state.merged_into is not None
        or state.erased
        or (state.dropped_at is not None and state.dropped_at >= at)
        or event.event_type is EventType.LEAD_IDENTIFIED
    ):
        return None
    instances, told = sla.rewound(state.sla, at, defs)
    draft = LeadDraft(state)
    draft.sla = instances
    if state.clock is None or at > state.clock:
        draft.clock = at
    changes = _Changes()
    _apply_event(draft, event, defs, changes)
    draft.history = (*state.history, event)
    draft.seen = remember(state.seen, key, defs.dedupe_ids_per_lead)
    after = draft.freeze()
    outputs: list[Record] = list(changes.outputs)
    if state.timer_at is not None and after.sla:
        after, ticked = _tick(after, state.timer_at, defs)
        outputs.extend(ticked)
    renewed = {r.instance_id for r in outputs if type(r) is SlaRecord}
    if any(instance_id not in renewed for instance_id in told):
        return None  # its latest record is one from before `at`: only a re-fold knows it
    stamp = max(filter(None, (state.clock, state.timer_at, at)))
    emitted = _changes(list(told.values()), outputs, stamp)
    draft = LeadDraft(after)
    if state.timer_at is not None and (draft.timer_at is None or draft.timer_at < state.timer_at):
        draft.timer_at = state.timer_at
    _compact(draft, defs)
    _stamp(draft, emitted)
    return Step(draft.freeze(), tuple(emitted), tuple(changes.forwards), changes.ignored)


def _identifies_held_touches(entry: Entry, history: tuple[Entry, ...]) -> bool:
    """A `lead_identified` after touches of its anonymous id: those are adopted at it (re-fold)."""
    if type(entry) is not Event or entry.event_type is not EventType.LEAD_IDENTIFIED:
        return False
    anonymous_id = entry.anonymous_id
    return any(type(e) is Event and e.anonymous_id == anonymous_id for e in history)


def _append(state: LeadState, entry: Entry, key: str, defs: Definitions) -> Step:
    if type(entry) is Event and state.merged_into is None and not state.erased:
        return _append_event(state, entry, defs)
    state, ticked = _tick_before(state, entry.occurred_at, defs)
    outputs: list[Record] = list(ticked)
    step = _step(state, entry, defs)
    after = step.state
    assert after is not None
    outputs.extend(step.outputs)
    draft = LeadDraft(after)
    draft.seen = remember(state.seen, key, defs.dedupe_ids_per_lead)
    if step.ignored != "merged":  # forwarded to the survivor: kept there, not here
        draft.history = (*state.history, entry)
        _compact(draft, defs)
    _stamp(draft, outputs)
    return Step(draft.freeze(), tuple(outputs), step.forwards, step.ignored)


def _tick_before(
    state: LeadState, at: datetime, defs: Definitions
) -> tuple[LeadState, tuple[SlaRecord, ...]]:
    """The timers of a live lead due strictly before `at` fired (what precedes an entry at
    `at` in the fold)."""
    if state.merged_into is None and state.sla:
        due = sla.next_deadline(state.sla, defs)
        if due is not None and due < at:
            return _tick(state, at - _EPSILON, defs)
    return state, ()


def _append_event(state: LeadState, event: Event, defs: Definitions) -> Step:
    """`_append` of an event that sorts last on a live lead: one draft, nothing else."""
    at = event.occurred_at
    state, ticked = _tick_before(state, at, defs)
    outputs: list[Record] = list(ticked)
    draft = LeadDraft(state)
    draft.seen = remember(state.seen, event.event_id, defs.dedupe_ids_per_lead)
    if state.clock is None or at > state.clock:
        draft.clock = at
    changes = _Changes()
    _apply_event(draft, event, defs, changes)
    history = state.history
    draft.history = (*history, event)
    if len(history) >= defs.history_max_entries:
        _compact(draft, defs)
    if changes.outputs:
        outputs.extend(changes.outputs)
    if outputs:
        _stamp(draft, outputs)
    return Step(
        draft.freeze(),
        tuple(outputs) if outputs else (),
        tuple(changes.forwards) if changes.forwards else (),
        changes.ignored,
    )


def _stamp(draft: LeadDraft, outputs: Sequence[Record]) -> None:
    """Give each output the lead's next revision (what downstream keeps the highest of)."""
    revision = draft.revision
    for record in outputs:
        revision += 1
        object.__setattr__(record, "revision", revision)
    draft.revision = revision


def _refold(
    state: LeadState, entry: Entry, key: str, replaced: Entry | None, defs: Definitions
) -> Step:
    """Fold the history again with `entry` in its place (module docstring)."""
    kept = [e for e in state.history if e is not replaced]
    order = entry_key(entry)
    position = len(kept)
    while position and entry_key(kept[position - 1]) > order:
        position -= 1
    history = (*kept[:position], entry, *kept[position:])
    seen = remember(state.seen, key, defs.dedupe_ids_per_lead)
    return _refolded(state, history, seen, entry.occurred_at, defs)


def _refolded(
    state: LeadState,
    history: tuple[Entry, ...],
    seen: Mapping[str, None],
    latest_at: datetime,
    defs: Definitions,
) -> Step:
    """`state` with `history` folded from its base; emit what changed (upserts, corrections of
    SLA outcomes, retractions of what no longer holds)."""
    base = state.base or LeadState(state.lead_id)
    before, old_outputs, old_forwards, after, new_outputs, new_forwards = _fold_both(
        base, state.history, history, state.timer_at, defs
    )
    stamp = max(filter(None, (state.clock, state.timer_at, latest_at)))
    outputs = _changes(old_outputs, new_outputs, stamp)
    forwards = tuple(
        f
        for f in new_forwards
        if f not in old_forwards
        and not (after.erased and isinstance(f, Identify))
        and not (isinstance(f, Forget) and f.anonymous_id.startswith("erased:"))
    )
    draft = LeadDraft(after)
    draft.history = history
    draft.base = state.base
    draft.horizon_at = state.horizon_at
    draft.seen = seen
    draft.revision = state.revision
    draft.version = state.version + (1 if outputs or before != after else 0)
    if state.timer_at is not None and (draft.timer_at is None or draft.timer_at < state.timer_at):
        draft.timer_at = state.timer_at
    _compact(draft, defs)
    _stamp(draft, outputs)
    return Step(draft.freeze(), tuple(outputs), forwards, None)


def _identified(history: Sequence[Entry]) -> dict[str | None, tuple[datetime, int, str]]:
    return {
        e.anonymous_id: entry_key(e)
        for e in history
        if type(e) is Event and e.event_type is EventType.LEAD_IDENTIFIED
    }


def _fold(
    base: LeadState,
    history: Sequence[Entry],
    timer_at: datetime | None,
    defs: Definitions,
    identified: dict[str | None, tuple[datetime, int, str]] | None = None,
    held: dict[str, list[Touch]] | None = None,
) -> tuple[LeadState, list[Record], list[Message]]:
    """`base` with `history` applied in order, each entry after the timers due strictly before
    it, then the timers due by `timer_at`; touches of a visitor identified later in the
    history wait for that `lead_identified` (they are adopted there, as a stitch).

    `identified` (the visitors identified in the whole history) and `held` (touches waiting
    from an earlier part) let a fold continue from a prefix folded before; `held` is updated."""
    state = base
    outputs: list[Record] = []
    forwards: list[Message] = []
    if identified is None:
        identified = _identified(history)
    if held is None:
        held = {}
    for entry in history:
        at = entry.occurred_at
        state, ticked = _tick_before(state, at, defs)
        outputs.extend(ticked)
        if (
            type(entry) is Event
            and entry.event_type is EventType.TOUCH
            and entry.anonymous_id in identified
            and entry_key(entry) < identified[entry.anonymous_id]
        ):
            held.setdefault(entry.anonymous_id or "", []).append(touch_of(entry, 0))
            continue
        step = _step(state, entry, defs)
        assert step.state is not None
        state = step.state
        outputs.extend(step.outputs)
        forwards.extend(step.forwards)
        if type(entry) is Event and entry.event_type is EventType.LEAD_IDENTIFIED:
            touches = held.pop(entry.anonymous_id or "", None)
            if touches and not state.erased and state.merged_into is None:
                draft = LeadDraft(state)
                changes = _Changes()
                _adopt_touches(draft, tuple(touches))
                _settle(draft, entry.event_id, at, defs, changes, attributes_changed=False)
                state = draft.freeze()
                outputs.extend(changes.outputs)
    if timer_at is not None and state.sla and state.merged_into is None:
        state, ticked = _tick(state, timer_at, defs)
        outputs.extend(ticked)
    return state, outputs, forwards


def _fold_both(
    base: LeadState,
    old: tuple[Entry, ...],
    new: tuple[Entry, ...],
    timer_at: datetime | None,
    defs: Definitions,
) -> tuple[LeadState, list[Record], list[Message], LeadState, list[Record], list[Message]]:
    """The folds of `old` and `new` from `base`, their common prefix folded once."""
    identified = _identified(new)
    shared = 0
    if identified == _identified(old):
        limit = min(len(old), len(new))
        while shared < limit and old[shared] is new[shared]:
            shared += 1
    if shared == 0:
        before, old_out, old_fwd = _fold(base, old, timer_at, defs)
        after, new_out, new_fwd = _fold(base, new, timer_at, defs)
        return before, old_out, old_fwd, after, new_out, new_fwd
    held: dict[str, list[Touch]] = {}
    prefix, pre_out, pre_fwd = _fold(base, old[:shared], None, defs, identified, held)
    before, old_out, old_fwd = _fold(
        prefix, old[shared:], timer_at, defs, identified, {k: list(v) for k, v in held.items()}
    )
    after, new_out, new_fwd = _fold(prefix, new[shared:], timer_at, defs, identified, held)
    return (
        before,
        pre_out + old_out,
        pre_fwd + old_fwd,
        after,
        pre_out + new_out,
        pre_fwd + new_fwd,
    )


def _output_key(record: Record) -> tuple[str, str]:
    if type(record) is SlaRecord:
        return ("sla", record.instance_id)
    return (str(record.kind), record.record_id)


def _changes(old: list[Record], new: list[Record], stamp: datetime) -> list[Record]:
    """The records that turn what `old` left downstream into what `new` leaves (latest per key)."""
    before = {_output_key(r): r for r in old}
    after = {_output_key(r): r for r in new}
    out: list[Record] = [
        _retraction(record, stamp) for key, record in before.items() if key not in after
    ]
    for key, record in after.items():
        previous = before.get(key)
        if previous == record:
            continue
        if previous is None or type(record) is AttributionCredit:
            out.append(record)
        elif type(record) is Transition:  # retracted, then the new one: tallies follow both
            out.append(_retraction(previous, stamp))
            out.append(record)
        else:
            assert type(record) is SlaRecord and type(previous) is SlaRecord
            out.append(sla.re_evaluated(previous, record, stamp))
    return out


def _retraction(record: Record, stamp: datetime) -> Record:
    if type(record) is SlaRecord:
        return sla.retracted(record, stamp)
    assert type(record) is Transition or type(record) is AttributionCredit
    return replace(record, deleted=True)


def _finish(
    state: LeadState,
    outputs: Sequence[Record],
    forwards: Sequence[Message],
    ignored: str | None,
) -> Step:
    """`state` with its outputs stamped (`_stamp`)."""
    if not outputs:
        return Step(state, (), tuple(forwards), ignored)
    draft = LeadDraft(state)
    _stamp(draft, outputs)
    return Step(draft.freeze(), tuple(outputs), tuple(forwards), ignored)


def _compact(d: LeadDraft, defs: Definitions) -> None:
    """Beyond `lifecycle.history_max_entries`, fold the older half of the history into `base`;
    an event at or before `horizon_at` (the newest entry folded) is then refused as too late.
    An erased lead keeps no history (its personal data goes)."""
    if d.erased:
        if not d.history or not _is_anonymised(d.history):
            _anonymise(d, defs)
        return
    history = d.history
    if len(history) <= defs.history_max_entries:
        return
    count = len(history) - defs.history_max_entries // 2
    old = history[:count]
    base, _, _ = _fold(d.base or LeadState(d.lead_id), old, None, defs)
    d.base = replace(base, seen={}, history=(), base=None)
    d.history = history[count:]
    d.horizon_at = old[-1].occurred_at


# An erased lead keeps its history without personal data, so that an event of it that occurred
# before the erasure but arrives after it is still merged into its place: attributes give way to
# the fit score they gave, visitor ids to their hashes, notes go; a merged duplicate's state goes.
_FIT_KEY = "__fit_score__"
_NO_ATTRIBUTES: Mapping[str, str | int | float] = MappingProxyType({})
_PERSONAL = (EventType.LEAD_CREATED, EventType.LEAD_UPDATED)


def _anonymised_event(event: Event, fit: int | None) -> Event:
    attributes = event.attributes
    if event.event_type in _PERSONAL:
        attributes = MappingProxyType({_FIT_KEY: fit or 0})
    anonymous_id = event.anonymous_id
    if anonymous_id is not None and not anonymous_id.startswith("erased:"):
        anonymous_id = "erased:" + record_id(anonymous_id)
    return event._replace(attributes=attributes, anonymous_id=anonymous_id, note=None)


def _is_anonymised(history: tuple[Entry, ...]) -> bool:
    return all(
        (type(e) is not Event and not e.duplicate.attributes)  # type: ignore[union-attr]
        or type(e) is Event
        and (e.anonymous_id is None or e.anonymous_id.startswith("erased:"))
        and (e.event_type not in _PERSONAL or (e.attributes or {}).get(_FIT_KEY) is not None)
        for e in history
    )


def _anonymise(d: LeadDraft, defs: Definitions) -> None:
    """The history of an erased lead without personal data (module docstring of _FIT_KEY)."""
    state = d.base or LeadState(d.lead_id)
    kept: list[Entry] = []
    for entry in d.history:
        step = _step(state, entry, defs)
        state = step.state or state
        if type(entry) is Event:
            kept.append(_anonymised_event(entry, state.fit_score))
        else:  # a merged-in duplicate: its touches stay, its personal data goes
            assert isinstance(entry, Absorb)
            duplicate = replace(
                entry.duplicate, attributes=_NO_ATTRIBUTES, anonymous_ids=frozenset()
            )
            kept.append(replace(entry, duplicate=duplicate))
    d.history = tuple(kept)
    if d.base is not None:
        d.base = replace(d.base, attributes=_NO_ATTRIBUTES, anonymous_ids=frozenset())


def _step(state: LeadState, entry: Entry, defs: Definitions) -> Step:
    """One entry applied on top of `state` (no dedupe, no history, no revisions)."""
    if state.merged_into is not None:
        if type(entry) is Event:
            forward: Message = entry._replace(lead_id=state.merged_into)
        else:
            assert isinstance(entry, Absorb)
            forward = replace(entry, survivor_id=state.merged_into)
        return Step(state, forwards=(forward,), ignored="merged")
    if state.erased:
        return Step(state, ignored="erased")
    if type(entry) is not Event:
        assert isinstance(entry, Absorb)
        return _absorb(state, entry, defs)
    draft = LeadDraft(state)
    at = entry.occurred_at
    if state.clock is None or at > state.clock:
        draft.clock = at
    changes = _Changes()
    _apply_event(draft, entry, defs, changes)
    return Step(
        draft.freeze(),
        tuple(changes.outputs) if changes.outputs else (),
        tuple(changes.forwards) if changes.forwards else (),
        changes.ignored,
    )


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
        kept = event.attributes.get(_FIT_KEY) if event.attributes else None
        if isinstance(kept, int):  # an erased lead's history keeps the fit, not the data
            d.attributes = _NO_ATTRIBUTES
            d.fit_score = kept
        else:
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


def _adopt_touches(d: LeadDraft, touches: tuple[Touch, ...]) -> None:
    known = {t.event_id for t in d.touches}
    adopted = []
    for touch in sorted(touches, key=lambda t: (t.occurred_at, t.event_id)):
        if touch.event_id not in known:
            adopted.append(touch._replace(seq=d.next_seq))
            d.next_seq += 1
    d.touches = (*d.touches, *adopted)


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
    duplicate = replace(d.freeze(), seen={}, history=(), base=None, revision=0)
    ch.forwards.append(Absorb(survivor, duplicate, event.event_id, event.occurred_at))
    d.merged_into = survivor
    d.sla = ()
    _changed(d, force=True)


def _absorb(state: LeadState, message: Absorb, defs: Definitions) -> Step:
    dup = message.duplicate
    d = LeadDraft(state)
    ch = _Changes()
    at = message.occurred_at
    d.attributes = _merged(dup.attributes, d.attributes)
    d.anonymous_ids = d.anonymous_ids | dup.anonymous_ids
    d.owner_id = d.owner_id or dup.owner_id
    d.team_id = d.team_id or dup.team_id
    d.source = d.source or dup.source
    d.created_at = min(filter(None, (d.created_at, dup.created_at)), default=None)
    _adopt_touches(d, dup.touches)
    if d.stage is None and dup.stage is not None:
        _move(d, Signal.KNOWN, message.event_id, at, None, defs, ch)
    _settle(d, message.event_id, at, defs, ch, attributes_changed=True)
    return Step(d.freeze(), tuple(ch.outputs))


def _erase(d: LeadDraft, event: Event, defs: Definitions, ch: _Changes) -> None:
    for anonymous_id in sorted(d.anonymous_ids):
        ch.forwards.append(Forget(anonymous_id, event.event_id, d.lead_id))
    d.attributes = MappingProxyType({})
    d.anonymous_ids = frozenset()
    d.touches = ()  # behaviour is personal data too; credits already given stay (aggregates)
    d.fit_score = 0
    d.erased = True
    _changed(d, force=True)
