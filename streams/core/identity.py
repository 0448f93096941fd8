"""Identity: messages between keys for stitching, merging and erasure, and the anonymous side.

State is partitioned by key: a lead's state by lead_id, an anonymous visitor's by anonymous_id.
Steps that span keys are messages a step *forwards* to another key; a driver delivers them (the
replay driver at once, in order; the streaming pipeline through a re-keying topic):
- `lead_identified` at the lead → `Identify` to the anonymous key → `Stitch` (held touches) back
  to the lead; later touches of that anonymous_id are forwarded to the lead as events.
- `lead_merged` at the duplicate → `Absorb` (the duplicate's state) to the survivor; later events
  of the duplicate are forwarded to the survivor.
- `lead_erased` at the lead → `Forget` to each of its anonymous keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from streams.core.events import Event, EventType
from streams.core.state import AnonymousState, LeadState, Touch, remember, touch_of


@dataclass(frozen=True, slots=True)
class Identify:
    """Tell an anonymous key which lead it is (from `lead_identified`)."""

    anonymous_id: str
    lead_id: str
    event_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Stitch:
    """Touches an anonymous visitor made before being identified, for the lead to adopt."""

    lead_id: str
    anonymous_id: str
    touches: tuple[Touch, ...]
    event_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Absorb:
    """A merged duplicate's state, for the survivor to fold in (from `lead_merged`)."""

    survivor_id: str
    duplicate: LeadState
    event_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Forget:
    """Erase an anonymous key's touches (the lead it belongs to, `lead_id`, was erased)."""

    anonymous_id: str
    event_id: str
    lead_id: str | None = None


Message = Event | Identify | Stitch | Absorb | Forget


def is_anonymous_message(message: Message) -> bool:
    """True when the message belongs to the anonymous store (keyed by anonymous_id)."""
    if type(message) is Event:
        return message.lead_id is None  # only touches may lack a lead_id
    if isinstance(message, Identify | Forget):
        return True
    return (
        isinstance(message, Event)
        and message.event_type is EventType.TOUCH
        and message.lead_id is None
    )


def message_key(message: Message) -> str:
    """The key (lead_id or anonymous_id) whose state the message is applied to."""
    if type(message) is Event:
        return message.lead_id or message.anonymous_id or message.event_id
    if isinstance(message, Identify | Forget):
        return message.anonymous_id
    if isinstance(message, Stitch):
        return message.lead_id
    if isinstance(message, Absorb):
        return message.survivor_id
    return message.lead_id or message.anonymous_id or message.event_id


def apply_anonymous(
    state: AnonymousState | None, message: Message, dedupe_ids: int
) -> tuple[AnonymousState | None, tuple[Message, ...]]:
    """Apply a message to an anonymous visitor's state; returns (state, forwarded messages).

    The latest `dedupe_ids` event ids are remembered (`state.remember`)."""
    if isinstance(message, Forget):
        # The touches go; the link to the (erased) lead stays, so that a touch of this visitor
        # arriving late still reaches that lead, which keeps it without personal data, whatever
        # the order in which the erasure, the identification and the touches arrived.
        lead_id = (state.lead_id if state else None) or message.lead_id
        if lead_id is None:
            return None, ()
        forgotten = AnonymousState(
            message.anonymous_id, lead_id=lead_id, seen=state.seen if state else {}
        )
        if state is None or not state.touches:
            return forgotten, ()
        stitch = Stitch(
            lead_id,
            state.anonymous_id,
            state.touches,
            message.event_id,
            state.touches[-1].occurred_at,
        )
        return forgotten, (stitch,)
    if isinstance(message, Identify):
        if state is None:
            return AnonymousState(message.anonymous_id, lead_id=message.lead_id), ()
        if state.lead_id is not None:
            return state, ()  # already stitched to a lead: the first identification wins
        stitched = replace(state, lead_id=message.lead_id, touches=())
        if not state.touches:
            return stitched, ()
        return stitched, (
            Stitch(
                message.lead_id,
                state.anonymous_id,
                state.touches,
                message.event_id,
                message.occurred_at,
            ),
        )
    assert isinstance(message, Event) and message.anonymous_id is not None
    if state is None:
        state = AnonymousState(message.anonymous_id)
    if message.event_id in state.seen:
        return state, ()
    seen = remember(state.seen, message.event_id, dedupe_ids)
    if state.lead_id is not None:
        return replace(state, seen=seen), (message._replace(lead_id=state.lead_id),)
    touch = touch_of(message, state.next_seq)
    return replace(
        state, touches=(*state.touches, touch), seen=seen, next_seq=state.next_seq + 1
    ), ()
