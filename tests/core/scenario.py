"""A small Given/When/Then harness over the replay driver (no servers, no files)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streams.core.definitions import Definitions
from streams.core.events import parse_event, parse_time
from streams.core.records import AttributionCredit, Record, SlaRecord, Transition
from streams.definitions_file import load_definitions
from streams.replay import Replayer

DEFS = load_definitions()


class Scenario:
    """Feeds events by short-hand and answers questions about the outputs."""

    def __init__(self, defs: Definitions = DEFS) -> None:
        self.records: list[Record] = []
        self.replayer = Replayer(defs, self.records.append)
        self._ids = 0

    def event(self, event_type: str, at: str, **fields: Any) -> Scenario:
        self._ids += 1
        obj = {
            "event_id": fields.pop("event_id", f"e{self._ids}"),
            "event_type": event_type,
            "occurred_at": at,
            "source": "test",
            **fields,
        }
        self.replayer.feed(parse_event(obj))
        return self

    def until(self, at: str) -> Scenario:
        self.replayer.advance(parse_time(at))
        return self

    def transitions(self, lead_id: str = "L1") -> list[tuple[str | None, str]]:
        return [
            (r.from_stage, r.to_stage)
            for r in self.records
            if isinstance(r, Transition) and r.lead_id == lead_id
        ]

    def sla_events(self, policy: str) -> list[str]:
        return [
            str(r.event) for r in self.records if isinstance(r, SlaRecord) and r.policy == policy
        ]

    def sla_final(self, policy: str) -> SlaRecord:
        return [r for r in self.records if isinstance(r, SlaRecord) and r.policy == policy][-1]

    def credits(self, model: str, trigger: str = "opportunity_created") -> dict[str | None, int]:
        return {
            r.touch_event_id: r.credit_minor
            for r in self.records
            if isinstance(r, AttributionCredit) and r.model == model and r.trigger == trigger
        }

    def state(self, lead_id: str = "L1") -> Any:
        return self.replayer.leads[lead_id]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)


def new_lead(
    s: Scenario, at: str = "2026-03-02T10:00:00+01:00", lead_id: str = "L1", **attrs: Any
) -> Scenario:
    """Given a lead created in the EMEA team with modest fit."""
    return s.event(
        "lead_created",
        at,
        lead_id=lead_id,
        owner_id="rep-emea-1",
        team_id="emea",
        attributes={"employees": 50, "country": "DE", **attrs},
    )


def demo_request(s: Scenario, at: str, lead_id: str = "L1") -> Scenario:
    """When the lead raises a hand (→ MQL)."""
    return s.event(
        "touch",
        at,
        lead_id=lead_id,
        touch_type="demo_request",
        channel="paid_search",
        campaign_id="c1",
    )
