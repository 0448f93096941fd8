"""Event time, not arrival: late events merge into their place; nothing alert-worthy after the fact.

Scenario tests over the replay driver (the same core the worker runs). Monday 2 March 2026 in
Berlin; the MQL first-touch SLA is 4 business hours (warn at 3, breach 15 minutes after the
deadline, escalate 4 business hours after the breach).
"""

from __future__ import annotations

from streams.core.records import SlaRecord, Transition

from .scenario import Scenario, demo_request, new_lead

POLICY = "mql_first_touch"


def _sla(s: Scenario) -> list[SlaRecord]:
    return [r for r in s if isinstance(r, SlaRecord) and r.policy == POLICY]


def _call(s: Scenario, at: str) -> Scenario:
    return s.event("activity", at, lead_id="L1", activity_type="call", rep_id="rep-emea-1")


def test_a_call_that_arrives_before_the_touch_it_answers_meets_the_sla() -> None:
    # Given a lead, When the rep's call (11:30) arrives before the demo request (10:30) it answers
    s = new_lead(Scenario())
    _call(s, "2026-03-02T11:30:00+01:00")
    demo_request(s, "2026-03-02T10:30:00+01:00")
    s.until("2026-03-03T18:00:00+01:00")
    # Then the SLA is met at the call, and no warning, breach or escalation was ever emitted
    records = _sla(s)
    assert [str(r.event) for r in records] == ["met"]
    assert records[-1].met_at is not None and records[-1].met_at.hour == 10  # 11:30 CET in UTC


def test_a_breach_a_late_call_disproves_is_followed_by_exactly_one_correction() -> None:
    # Given an MQL whose SLA breached (nobody's call had arrived)
    s = demo_request(new_lead(Scenario()), "2026-03-02T10:30:00+01:00")
    s.until("2026-03-02T15:00:00+01:00")
    assert [str(r.event) for r in _sla(s)] == ["started", "warned", "breached"]
    # When the CRM syncs a call that occurred at 13:00, before the deadline (14:30)
    _call(s, "2026-03-02T13:00:00+01:00")
    # and the clock passes the escalation time
    s.until("2026-03-03T18:00:00+01:00")
    # Then exactly one correction follows (met at 13:00), and no escalation after it
    events = [str(r.event) for r in _sla(s)]
    assert events == ["started", "warned", "breached", "corrected"]
    corrected = _sla(s)[-1]
    assert str(corrected.status) == "met" and corrected.breached_at is None
    assert corrected.corrected_at is not None and corrected.revision > _sla(s)[-2].revision


def test_no_warning_or_breach_for_an_instance_met_in_event_time() -> None:
    # Given an MQL met by a call, then the clock passes warning and deadline
    s = demo_request(new_lead(Scenario()), "2026-03-02T10:30:00+01:00")
    _call(s, "2026-03-02T10:45:00+01:00")
    s.until("2026-03-03T18:00:00+01:00")
    # Then only start and met
    assert [str(r.event) for r in _sla(s)] == ["started", "met"]


def test_no_escalation_for_an_instance_cancelled_in_event_time() -> None:
    # Given an MQL breached, When a rejection that occurred before the deadline arrives late
    s = demo_request(new_lead(Scenario()), "2026-03-02T10:30:00+01:00")
    s.until("2026-03-02T15:00:00+01:00")
    s.event(
        "lead_rejected",
        "2026-03-02T11:00:00+01:00",
        lead_id="L1",
        rep_id="rep-emea-1",
        reason="not_a_fit",
    )
    s.until("2026-03-03T18:00:00+01:00")
    # Then the breach is corrected (the lead left the stage in time), never escalated
    events = [str(r.event) for r in _sla(s)]
    assert "escalated" not in events and events[-1] == "corrected"
    assert str(_sla(s)[-1].status) == "cancelled"


def test_an_earlier_touch_that_arrives_late_moves_the_mql_and_retracts_what_no_longer_holds() -> (
    None
):
    # Given an MQL at a demo request on Tuesday
    s = demo_request(new_lead(Scenario()), "2026-03-03T10:00:00+01:00")
    first_mql = [r for r in s if isinstance(r, Transition) and r.to_stage == "mql"][-1]
    # When a demo request of Monday arrives late
    s.event(
        "touch",
        "2026-03-02T11:00:00+01:00",
        lead_id="L1",
        event_id="early",
        touch_type="demo_request",
        channel="email",
        campaign_id="c1",
    )
    # Then the Tuesday MQL is retracted, the Monday one emitted, and Tuesday's SLA withdrawn
    transitions = [r for r in s if isinstance(r, Transition) and r.to_stage == "mql"]
    retracted = [r for r in transitions if r.deleted]
    assert [r.record_id for r in retracted] == [first_mql.record_id]
    assert transitions[-1].event_id == "early" and not transitions[-1].deleted
    withdrawn = [r for r in _sla(s) if r.deleted]
    assert len(withdrawn) == 1 and str(withdrawn[0].event) == "retracted"
    assert s.replayer.transitions[transitions[-1].record_id].event_id == "early"


def test_the_same_events_in_any_order_leave_the_same_truth() -> None:
    events = [
        (
            "lead_created",
            "2026-03-02T09:00:00+01:00",
            {"owner_id": "rep-emea-1", "team_id": "emea", "attributes": {"employees": 50}},
        ),
        (
            "touch",
            "2026-03-02T10:30:00+01:00",
            {"touch_type": "demo_request", "channel": "email", "campaign_id": "c1"},
        ),
        (
            "activity",
            "2026-03-02T13:00:00+01:00",
            {"activity_type": "call", "rep_id": "rep-emea-1"},
        ),
        ("lead_accepted", "2026-03-03T09:00:00+01:00", {"rep_id": "rep-emea-1"}),
    ]
    truths = []
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]):
        s = Scenario()
        for i in order:
            kind, at, fields = events[i]
            s.event(kind, at, lead_id="L1", event_id=f"e{i}", **fields)
        s.until("2026-03-05T00:00:00+01:00")
        truths.append(
            (
                sorted((r.to_stage, r.at) for r in s.replayer.transitions.values()),
                sorted((r.policy, str(r.status), r.met_at) for r in s.replayer.sla_latest.values()),
            )
        )
    assert all(t == truths[0] for t in truths)
