"""Input events (DESIGN.md §5): parsing the canonical JSON form into immutable `Event`s."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from streams.core.errors import InvalidEvent
from streams.core.records import iso_z

MAX_EVENT_BYTES = 64 * 1024
MAX_EVENT_ID_CHARS = 128


class EventType(StrEnum):
    """Every event type leadflow accepts."""

    TOUCH = "touch"
    LEAD_CREATED = "lead_created"
    LEAD_UPDATED = "lead_updated"
    OWNER_ASSIGNED = "owner_assigned"
    LEAD_IDENTIFIED = "lead_identified"
    LEAD_MERGED = "lead_merged"
    LEAD_ERASED = "lead_erased"
    ACTIVITY = "activity"
    LEAD_ACCEPTED = "lead_accepted"
    LEAD_QUALIFIED = "lead_qualified"
    LEAD_REJECTED = "lead_rejected"
    OPPORTUNITY_CREATED = "opportunity_created"
    DEAL_WON = "deal_won"
    DEAL_LOST = "deal_lost"


TOUCH_TYPES = frozenset(
    "ad_click email_open email_click form_submit webinar_registered webinar_attended "
    "content_download page_view event_attended chat_started demo_request".split()
)
CHANNELS = frozenset(
    "paid_search paid_social display email organic_search organic_social referral direct "
    "events webinar content partner other".split()
)
ACTIVITY_TYPES = frozenset("call email meeting linkedin_message".split())
REJECT_REASONS = frozenset(
    "not_a_fit no_budget no_authority no_need bad_timing duplicate invalid_contact competitor "
    "student other".split()
)
# ISO-4217 minor-unit exponents that differ from 2.
_EXPONENTS = {
    "JPY": 0,
    "KRW": 0,
    "CLP": 0,
    "ISK": 0,
    "VND": 0,
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
    "OMR": 3,
    "TND": 3,
}

_COMMON = ("event_id", "event_type", "occurred_at", "source")
# event_type -> (required fields, optional fields) beyond the common ones
_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "touch": (("touch_type", "channel"), ("campaign_id", "lead_id", "anonymous_id")),
    "lead_created": (("lead_id",), ("owner_id", "team_id", "attributes")),
    "lead_updated": (("lead_id", "attributes"), ()),
    "owner_assigned": (("lead_id", "owner_id"), ("team_id",)),
    "lead_identified": (("lead_id", "anonymous_id"), ()),
    "lead_merged": (("lead_id", "survivor_id"), ()),
    "lead_erased": (("lead_id",), ()),
    "activity": (("lead_id", "activity_type", "rep_id"), ("outcome",)),
    "lead_accepted": (("lead_id", "rep_id"), ()),
    "lead_qualified": (("lead_id", "rep_id"), ()),
    "lead_rejected": (("lead_id", "rep_id", "reason"), ("note",)),
    "opportunity_created": (("lead_id", "opportunity_id", "amount", "currency"), ()),
    "deal_won": (("lead_id", "opportunity_id", "amount", "currency"), ()),
    "deal_lost": (("lead_id", "opportunity_id"), ("reason", "amount", "currency")),
}
# Each allowed value maps to one shared instance: events then hold that instance, not a copy
# per event, which keeps lead state smaller and scoring's lookups on memory already in cache.
_ENUMS: dict[str, Mapping[str, str]] = {
    "touch_type": {value: value for value in TOUCH_TYPES},
    "channel": {value: value for value in CHANNELS},
    "activity_type": {value: value for value in ACTIVITY_TYPES},
}

AttrValue = str | int | float


class Event(NamedTuple):
    """One validated input event; type-specific fields are None when the type has none.

    A NamedTuple rather than a frozen dataclass: one is built per input event, and building a
    22-field frozen dataclass costs ~3.5 µs against ~0.5 µs here (measured; see bench/README.md).
    Immutable all the same; use `event._replace(...)` for a changed copy.
    """

    event_id: str
    event_type: EventType
    occurred_at: datetime
    source: str
    lead_id: str | None = None
    anonymous_id: str | None = None
    touch_type: str | None = None
    channel: str | None = None
    campaign_id: str | None = None
    owner_id: str | None = None
    team_id: str | None = None
    attributes: Mapping[str, AttrValue] | None = None
    survivor_id: str | None = None
    activity_type: str | None = None
    rep_id: str | None = None
    outcome: str | None = None
    reason: str | None = None
    note: str | None = None
    opportunity_id: str | None = None
    amount: str | None = None
    amount_minor: int | None = None
    currency: str | None = None


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point for an ISO-4217 currency code."""
    return _EXPONENTS.get(currency, 2)


def to_minor(amount: str, currency: str) -> int:
    """Decimal string in major units → integer minor units; InvalidEvent if not representable."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidEvent(f"amount: {amount!r} is not a decimal string") from None
    if not value.is_finite() or value < 0:
        raise InvalidEvent(f"amount: {amount!r} must be a finite, non-negative decimal")
    scaled = value.scaleb(currency_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InvalidEvent(
            f"amount: {amount!r} has more decimals than {currency} allows "
            f"({currency_exponent(currency)})"
        )
    return int(scaled)


def parse_time(value: object, field: str = "occurred_at") -> datetime:
    """ISO-8601 with an offset → tz-aware UTC datetime; InvalidEvent otherwise."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: expected an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"{field}: {value[:40]!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is UTC:
        return parsed
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{field}: {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _string(obj: Mapping[str, Any], field: str, required: bool) -> str | None:
    value = obj.get(field)
    if value is None:
        if required:
            raise InvalidEvent(
                f"{field}: missing" if field not in obj else f"{field}: must not be null"
            )
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: expected a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidEvent(f"{field}: must not be empty")
    return value


def _attributes(value: object) -> Mapping[str, AttrValue] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent(f"attributes: expected an object, got {type(value).__name__}")
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise InvalidEvent(f"attributes.{key}: expected a string or number")
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class _Shape:
    """What one event type may carry: the allowed keys; per field its Event index, whether it is
    required and its allowed values (None: any string); then the type's rules across fields."""

    event_type: EventType
    allowed: frozenset[str]
    fields: tuple[tuple[str, int, bool, Mapping[str, str] | None], ...]
    attributes: tuple[int, bool] | None  # Event index and required, when the type has them
    rules: Callable[[Event], Event] | None


def _check_touch(event: Event) -> Event:
    if not (event.lead_id or event.anonymous_id):
        raise InvalidEvent("lead_id: a touch needs lead_id or anonymous_id")
    return event


def _check_reason(event: Event) -> Event:
    if event.reason not in REJECT_REASONS:
        raise InvalidEvent(f"reason: unknown rejection reason {event.reason!r}")
    return event


def _check_money(event: Event) -> Event:
    currency = event.currency
    if currency is not None and (
        len(currency) != 3 or not currency.isalpha() or not currency.isupper()
    ):
        raise InvalidEvent(f"currency: {currency!r} is not an ISO-4217 code")
    if event.amount is not None:
        if currency is None:
            raise InvalidEvent("currency: required with amount")
        return event._replace(amount_minor=to_minor(event.amount, currency))
    return event


_RULES: dict[str, Callable[[Event], Event]] = {
    "touch": _check_touch,
    "lead_rejected": _check_reason,
    "opportunity_created": _check_money,
    "deal_won": _check_money,
    "deal_lost": _check_money,
}
_INDEX = {name: index for index, name in enumerate(Event._fields)}


def _shape(kind: str, required: tuple[str, ...], optional: tuple[str, ...]) -> _Shape:
    names = required + optional
    return _Shape(
        EventType(kind),
        frozenset(_COMMON + names),
        tuple(
            (name, _INDEX[name], name in required, _ENUMS.get(name))
            for name in names
            if name != "attributes"
        ),
        (_INDEX["attributes"], "attributes" in required) if "attributes" in names else None,
        _RULES.get(kind),
    )


# attributes, where a type has them, come last (their errors are reported after the others')
_SHAPES = {kind: _shape(kind, *fields) for kind, fields in _FIELDS.items()}
_BLANK: tuple[Any, ...] = (None,) * len(Event._fields)


def parse_event(obj: object) -> Event:
    """Validate a canonical JSON event object and build the `Event` (InvalidEvent on error)."""
    if type(obj) is not dict:
        raise InvalidEvent(f"event: expected a JSON object, got {type(obj).__name__}")
    get = obj.get
    event_type = get("event_type")
    shape = _SHAPES.get(event_type) if type(event_type) is str else None
    if shape is None:
        if event_type is None:
            raise InvalidEvent("event_type: missing")
        raise InvalidEvent(f"event_type: unknown value {str(event_type)[:40]!r}")
    if not shape.allowed.issuperset(obj):
        unknown = sorted(set(obj) - shape.allowed)[0]
        raise InvalidEvent(
            f"{unknown}: unknown field for {event_type} (written by a newer schema?)"
        )
    values: list[Any] = list(_BLANK)
    event_id = get("event_id")
    if type(event_id) is not str or not event_id:
        event_id = _string(obj, "event_id", True)  # raises unless a non-empty str subclass
        assert event_id is not None
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise InvalidEvent(f"event_id: longer than {MAX_EVENT_ID_CHARS} characters")
    values[0] = event_id
    values[1] = shape.event_type
    values[2] = parse_time(get("occurred_at"))
    source = get("source")
    values[3] = source if type(source) is str and source else _string(obj, "source", True)
    for name, index, required, allowed in shape.fields:
        value = get(name)
        if value is None:
            if required:
                _string(obj, name, True)  # raises with the precise message
            continue
        if type(value) is not str:
            raise InvalidEvent(f"{name}: expected a string, got {type(value).__name__}")
        if required and not value:
            raise InvalidEvent(f"{name}: must not be empty")
        if allowed is not None:
            shared = allowed.get(value)
            if shared is None:
                raise InvalidEvent(f"{name}: unknown value {value!r}")
            value = shared
        values[index] = value
    if shape.attributes is not None:
        index, required = shape.attributes
        value = get("attributes")
        if value is None and required:
            raise InvalidEvent("attributes: missing")
        values[index] = _attributes(value)
    event = Event._make(values)
    return event if shape.rules is None else shape.rules(event)


def parse_line(line: str | bytes) -> Event:
    """One JSON Lines line → Event (InvalidEvent for oversized, undecodable or invalid input)."""
    if len(line) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event: larger than {MAX_EVENT_BYTES} bytes")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"event: not valid JSON ({exc.__class__.__name__})") from None
    return parse_event(obj)


def event_to_json(event: Event) -> dict[str, Any]:
    """The canonical JSON object of an event (only the fields its type carries)."""
    required, optional = _FIELDS[event.event_type]
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "event_type": str(event.event_type),
        "occurred_at": iso_z(event.occurred_at),
        "source": event.source,
    }
    for field in required + optional:
        value = getattr(event, field)
        if field == "attributes" and value is not None:
            value = dict(value)
        if value is not None or field in required:
            out[field] = value
    return out


def partition_key(event: Event) -> str:
    """The Kafka key: lead_id, or anonymous_id for a touch of a still-anonymous visitor."""
    return event.lead_id or event.anonymous_id or event.event_id
