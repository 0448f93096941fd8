"""Recycling as RevOps teams run it (Given / When / Then): a recycle resets engagement, a
cool-off lets only a hand-raiser back, and the rejecting event never moves the lead forward."""

from __future__ import annotations

import dataclasses

from streams.core import engine
from streams.core.records import Transition
from tests.core.scenario import DEFS, Scenario, demo_request, new_lead

# new_lead's fit: employees 50 (0) + country DE (5) = 5 points; the MQL threshold is 50,
# webinar_attended is worth 15, the engagement window 30 days, the cool-off 14 days.
assert DEFS.scoring.mql_threshold == 50 and DEFS.recycle_cooldown_days == 14


def _touch(s: Scenario, at: str, touch_type: str = "webinar_attended") -> Scenario:
    return s.event(
        "touch", at, lead_id="L1", touch_type=touch_type, channel="webinar", campaign_id="w1"
    )


def _reject(s: Scenario, at: str, reason: str = "bad_timing") -> Scenario:
    return s.event("lead_rejected", at, lead_id="L1", rep_id="rep-emea-1", reason=reason)


def _engaged_mql(s: Scenario) -> Scenario:
    """Given a lead that reached MQL by score: three webinars (45) + fit 5 = 50."""
    new_lead(s)
    _touch(s, "2026-03-02T12:00:00+01:00")
    _touch(s, "2026-03-02T13:00:00+01:00")
    _touch(s, "2026-03-02T14:00:00+01:00")
    assert s.transitions()[-1] == ("inquiry", "mql")
    return s


def _mql_cause(s: Scenario) -> list[str]:
    return [
        r.event_id
        for r in s.records
        if isinstance(r, Transition) and r.lead_id == "L1" and r.to_stage == "mql"
    ]


def _score(s: Scenario) -> tuple[int, int]:
    snap = engine.snapshot(s.state(), DEFS)
    assert snap is not None
    return snap.score, snap.engagement_score


def test_the_rejection_itself_never_moves_the_lead_forward() -> None:
    # Given an engaged MQL whose old engagement still scores 50 (the bounce of issue 14)
    s = _engaged_mql(Scenario())
    # When sales rejects it with a recycle reason
    _reject(s, "2026-03-03T10:00:00+01:00")
    # Then it stays recycled: no recycled → mql by the same event, no new SLAs
    assert s.transitions()[-1] == ("mql", "recycled")
    assert s.state().stage == "recycled"
    assert s.sla_events("mql_first_touch").count("started") == 1
    # and its engagement is reset (fit stays)
    assert _score(s) == (5, 0)


def test_recycle_then_hand_raiser_comes_back_at_once_even_inside_the_cool_off() -> None:
    # Given an engaged MQL recycled on 3 March
    s = _engaged_mql(Scenario())
    _reject(s, "2026-03-03T10:00:00+01:00")
    # When the lead requests a demo five days later (inside the 14-day cool-off)
    demo_request(s, "2026-03-08T11:00:00+01:00")
    # Then it is an MQL again, in a second episode, with fresh SLAs
    assert s.transitions()[-2:] == [("mql", "recycled"), ("recycled", "mql")]
    assert _mql_cause(s)[-1] == f"e{s._ids}"
    assert s.state().episode == 2
    assert s.sla_events("mql_first_touch").count("started") == 2


def test_recycle_then_slow_re_engagement_counts_only_touches_after_the_recycle() -> None:
    # Given an engaged MQL recycled on 3 March (its 45 points of webinars are in the window)
    s = _engaged_mql(Scenario())
    _reject(s, "2026-03-03T10:00:00+01:00")
    # When, after the cool-off, it attends two webinars: 5 + 30 = 35, and with the old
    # touches it would be 80
    _touch(s, "2026-03-20T10:00:00+01:00")
    _touch(s, "2026-03-24T10:00:00+01:00")
    # Then it is still recycled: the touches before the recycle no longer count
    assert s.state().stage == "recycled"
    assert _score(s) == (35, 30)
    # When a third webinar brings its fresh engagement to 45 (score 50)
    _touch(s, "2026-03-28T10:00:00+01:00", "event_attended")
    # Then that touch re-qualifies it
    assert s.transitions()[-1] == ("recycled", "mql")
    assert _mql_cause(s)[-1] == f"e{s._ids}"
    assert s.state().episode == 2


def test_recycle_inside_the_cool_off_only_a_hand_raiser_requalifies() -> None:
    # Given an MQL (by a demo request) recycled on 3 March
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    _reject(s, "2026-03-03T10:00:00+01:00")
    # When it attends three webinars inside the cool-off: fresh engagement 45, score 50
    for day in ("05", "09", "13"):
        _touch(s, f"2026-03-{day}T10:00:00+01:00")
    # Then it stays recycled (score over the threshold, but cooling off)
    assert s.state().stage == "recycled"
    assert _score(s) == (50, 45)
    # When the cool-off is over (17 March 10:00) and it views one page
    _touch(s, "2026-03-17T10:00:01+01:00", "page_view")
    # Then the touches of the cool-off count: it is an MQL again
    assert s.transitions()[-1] == ("recycled", "mql")
    assert _mql_cause(s)[-1] == f"e{s._ids}"


def test_a_non_touch_event_after_the_cool_off_does_not_requalify_a_high_fit_lead() -> None:
    # Given a lead whose fit alone reaches the threshold (15 + 10 + 10 + 5 + 10 = 50)
    s = new_lead(Scenario(), employees=5000, industry="software", title="Director of Sales")
    assert s.transitions()[-1] == ("inquiry", "mql")
    # When it is recycled, and a month later sales only updates its record
    _reject(s, "2026-03-03T10:00:00+01:00")
    s.event("lead_updated", "2026-04-06T10:00:00+02:00", lead_id="L1", attributes={"x": 1})
    # Then it is still recycled: only a touch (re-engagement) brings it back
    assert s.state().stage == "recycled"
    # When it opens an email after the cool-off
    _touch(s, "2026-04-07T10:00:00+02:00", "email_open")
    # Then fit (kept) + fresh engagement re-qualify it
    assert s.transitions()[-1] == ("recycled", "mql")


def test_without_a_cool_off_fresh_engagement_requalifies_at_once() -> None:
    # Given definitions with no cool-off and an MQL recycled on 3 March
    s = new_lead(Scenario(dataclasses.replace(DEFS, recycle_cooldown_days=0)))
    demo_request(s, "2026-03-02T11:00:00+01:00")
    _reject(s, "2026-03-03T10:00:00+01:00")
    # When three webinars follow on the next days
    for day in ("04", "05", "06"):
        _touch(s, f"2026-03-{day}T10:00:00+01:00")
    # Then the third re-qualifies it
    assert s.transitions()[-1] == ("recycled", "mql")
    assert _mql_cause(s)[-1] == f"e{s._ids}"


def test_disqualify_absorbs_whatever_the_lead_does_next() -> None:
    # Given an MQL
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    # When sales rejects it as not a fit
    _reject(s, "2026-03-03T10:00:00+01:00", reason="not_a_fit")
    # and later it requests a demo and attends webinars
    demo_request(s, "2026-04-08T11:00:00+02:00")
    for day in ("09", "10", "11", "12"):
        _touch(s, f"2026-04-{day}T10:00:00+02:00")
    # Then it stays disqualified, in its first episode, and no new SLA starts
    assert s.transitions()[-1] == ("mql", "disqualified")
    assert s.state().stage == "disqualified"
    assert s.state().episode == 1
    assert s.sla_events("mql_first_touch").count("started") == 1
