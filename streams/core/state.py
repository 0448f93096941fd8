"""Immutable per-key state: a lead's state (keyed by lead_id) and an anonymous visitor's state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

from streams.core.lifecycle import Stage
from streams.core.sla import SlaInstance

_EMPTY: Mapping[str, str | int | float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Touch:
    """A marketing touch held in state (for scoring and attribution); `seq` is arrival order."""

    event_id: str
    occurred_at: datetime
    touch_type: str
    channel: str
    campaign_id: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class LeadState:
    """Everything the core knows about one lead. `stage` is None while only touches are known."""

    lead_id: str
    stage: Stage | None = None
    episode: int = 0
    owner_id: str | None = None
    team_id: str | None = None
    source: str | None = None
    attributes: Mapping[str, str | int | float] = field(default_factory=lambda: _EMPTY)
    touches: tuple[Touch, ...] = ()
    fit_score: int = 0
    engagement_score: int = 0
    created_at: datetime | None = None
    stage_entered_at: datetime | None = None
    inquiry_at: datetime | None = None
    mql_at: datetime | None = None
    opportunity_id: str | None = None
    opportunity_at: datetime | None = None
    sla: tuple[SlaInstance, ...] = ()
    seen: frozenset[str] = field(default_factory=frozenset)
    anonymous_ids: frozenset[str] = field(default_factory=frozenset)
    version: int = 0
    next_seq: int = 0
    clock: datetime | None = None  # latest occurred_at applied to this lead
    erased: bool = False
    merged_into: str | None = None

    @property
    def score(self) -> int:
        """Fit plus engagement points."""
        return self.fit_score + self.engagement_score


@dataclass(frozen=True, slots=True)
class AnonymousState:
    """Touches of a not-yet-identified visitor; once identified, the lead it belongs to."""

    anonymous_id: str
    touches: tuple[Touch, ...] = ()
    lead_id: str | None = None
    seen: frozenset[str] = field(default_factory=frozenset)
    next_seq: int = 0


_LEAD_FIELDS = tuple(f.name for f in fields(LeadState))


class LeadDraft:
    """A mutable working copy of a LeadState, used inside one engine call and frozen at its end.

    One copy in and one out per call is far cheaper than a `dataclasses.replace` per change.
    """

    __slots__ = _LEAD_FIELDS

    if TYPE_CHECKING:  # the same fields as LeadState, mutable
        lead_id: str
        stage: Stage | None
        episode: int
        owner_id: str | None
        team_id: str | None
        source: str | None
        attributes: Mapping[str, str | int | float]
        touches: tuple[Touch, ...]
        fit_score: int
        engagement_score: int
        created_at: datetime | None
        stage_entered_at: datetime | None
        inquiry_at: datetime | None
        mql_at: datetime | None
        opportunity_id: str | None
        opportunity_at: datetime | None
        sla: tuple[SlaInstance, ...]
        seen: frozenset[str]
        anonymous_ids: frozenset[str]
        version: int
        next_seq: int
        clock: datetime | None
        erased: bool
        merged_into: str | None

    def __init__(self, state: LeadState) -> None:
        for name in _LEAD_FIELDS:
            setattr(self, name, getattr(state, name))

    @property
    def score(self) -> int:
        """Fit plus engagement points."""
        return self.fit_score + self.engagement_score

    def freeze(self) -> LeadState:
        """The immutable state with this draft's values."""
        new = object.__new__(LeadState)
        for name in _LEAD_FIELDS:
            object.__setattr__(new, name, getattr(self, name))
        return new
