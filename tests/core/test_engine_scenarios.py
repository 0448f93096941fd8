"""Scenario tests of the engine (Given / When / Then), driven through the replay driver."""

from __future__ import annotations

import dataclasses
from datetime import UTC
from zoneinfo import ZoneInfo

from tests.core.scenario import DEFS, Scenario, demo_request, new_lead


def test_full_funnel_records_every_transition() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    s.event(
        "activity",
        "2026-03-02T12:00:00+01:00",
        lead_id="L1",
        activity_type="call",
        rep_id="rep-emea-1",
    )
    s.event("lead_accepted", "2026-03-03T10:00:00+01:00", lead_id="L1", rep_id="rep-emea-1")
    s.event("lead_qualified", "2026-03-05T10:00:00+01:00", lead_id="L1", rep_id="rep-emea-1")
    s.event(
        "opportunity_created",
        "2026-03-06T10:00:00+01:00",
        lead_id="L1",
        opportunity_id="o1",
        amount="1000.00",
        currency="EUR",
    )
    s.event(
        "deal_won",
        "2026-04-06T10:00:00+02:00",
        lead_id="L1",
        opportunity_id="o1",
        amount="1200.00",
        currency="EUR",
    )
    assert s.transitions() == [
        (None, "inquiry"),
        ("inquiry", "mql"),
        ("mql", "sal"),
        ("sal", "sql"),
        ("sql", "opportunity"),
        ("opportunity", "customer"),
    ]
    assert s.sla_final("mql_first_touch").status == "met"
    assert s.sla_final("mql_disposition").status == "met"
    assert s.sla_final("sal_to_sql").status == "met"
    assert s.credits("first_touch", "deal_won") == {"e2": 120000}


def test_opportunity_on_an_mql_jumps_and_records_skipped_stages() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    s.event(
        "opportunity_created",
        "2026-03-03T10:00:00+01:00",
        lead_id="L1",
        opportunity_id="o1",
        amount="500",
        currency="USD",
    )
    jump = [r for r in s.records if getattr(r, "to_stage", None) == "opportunity"][0]
    assert jump.skipped_stages == ("sal", "sql")  # type: ignore[union-attr]


def test_recycled_lead_comes_back_as_a_second_episode() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    s.event(
        "lead_rejected",
        "2026-03-03T10:00:00+01:00",
        lead_id="L1",
        rep_id="rep-emea-1",
        reason="bad_timing",
    )
    demo_request(s, "2026-05-04T11:00:00+02:00")
    assert s.transitions()[-2:] == [("mql", "recycled"), ("recycled", "mql")]
    assert s.state().episode == 2


def test_rejection_with_another_reason_disqualifies_and_absorbs() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    s.event(
        "lead_rejected",
        "2026-03-03T10:00:00+01:00",
        lead_id="L1",
        rep_id="rep-emea-1",
        reason="student",
    )
    s.event("lead_qualified", "2026-03-04T10:00:00+01:00", lead_id="L1", rep_id="rep-emea-1")
    assert s.transitions()[-1] == ("mql", "disqualified")
    assert s.replayer.stats.ignored == 1


def test_deal_lost_closes_the_lead() -> None:
    s = new_lead(Scenario())
    s.event(
        "opportunity_created",
        "2026-03-03T10:00:00+01:00",
        lead_id="L1",
        opportunity_id="o1",
        amount="500",
        currency="EUR",
    )
    s.event(
        "deal_lost", "2026-04-03T10:00:00+02:00", lead_id="L1", opportunity_id="o1", reason="price"
    )
    assert s.transitions()[-1] == ("opportunity", "closed_lost")


def test_duplicate_event_is_applied_once() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    before = list(s.records)
    s.event(
        "touch",
        "2026-03-02T11:00:00+01:00",
        event_id="e2",
        lead_id="L1",
        touch_type="demo_request",
        channel="paid_search",
    )
    assert s.records == before
    assert s.replayer.stats.duplicates == 1


def test_a_lead_remembers_its_latest_event_ids_however_old_they_are() -> None:
    """`lifecycle.dedupe_ids_per_lead` ids are kept, whatever their age: a repeated event_id
    among them is skipped; the oldest beyond that are forgotten (the state stays bounded)."""
    defs = dataclasses.replace(DEFS, dedupe_ids_per_lead=4)
    s = new_lead(Scenario(defs))  # e1
    demo_request(s, "2026-03-02T11:00:00+01:00")  # e2
    page_view = dict(touch_type="page_view", channel="organic_search", lead_id="L1")
    s.event("touch", "2026-09-30T09:00:00+02:00", event_id="september", **page_view)
    s.event("touch", "2026-03-02T11:00:00+01:00", event_id="e2", **page_view)  # 7 months on
    assert s.replayer.stats.duplicates == 1
    assert list(s.state().seen) == ["e1", "e2", "september"]
    s.event("touch", "2026-10-01T09:00:00+02:00", event_id="october", **page_view)
    s.event("touch", "2026-10-02T09:00:00+02:00", event_id="later", **page_view)
    assert list(s.state().seen) == ["e2", "september", "october", "later"]
    touches = len(s.state().touches)
    s.event("touch", "2026-10-02T09:30:00+02:00", event_id="september", **page_view)
    assert s.replayer.stats.duplicates == 2 and len(s.state().touches) == touches


def test_slow_first_touch_warns_breaches_and_escalates_to_the_managers_manager() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")  # Monday; 4 business hours → due 15:00 CET
    s.until("2026-03-03T17:00:00+01:00")
    assert s.sla_events("mql_first_touch") == ["started", "warned", "breached", "escalated"]
    final = s.sla_final("mql_first_touch")
    assert final.escalate_to == "dir-emea"  # rep-emea-1 → mgr-emea → dir-emea
    assert (
        final.breached_at is not None and final.breached_at.hour == 14
    )  # due 15:00 CET = 14:00 UTC


def test_late_crm_sync_corrects_a_breach() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    s.until("2026-03-02T18:00:00+01:00")
    assert s.sla_final("mql_first_touch").status == "breached"
    # Given the call happened at 13:00 but the CRM synced it the next day
    s.event(
        "activity",
        "2026-03-02T13:00:00+01:00",
        lead_id="L1",
        activity_type="call",
        rep_id="rep-emea-1",
    )
    final = s.sla_final("mql_first_touch")
    assert final.event == "corrected" and final.status == "met"


def test_leaving_the_stage_another_way_cancels() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-02T11:00:00+01:00")
    s.event("lead_accepted", "2026-03-02T12:00:00+01:00", lead_id="L1", rep_id="rep-emea-1")
    assert s.sla_final("mql_first_touch").status == "cancelled"
    assert s.sla_final("mql_disposition").status == "met"


def test_mql_outside_business_hours_starts_the_clock_at_the_next_opening() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-06T20:00:00+01:00")  # Friday evening
    record = s.sla_final("mql_first_touch")
    assert record.due_at.isoformat() == "2026-03-09T12:00:00+00:00"  # Mon 09:00 CET + 4 h


def test_anonymous_touches_are_stitched_and_credited() -> None:
    s = Scenario()
    s.event(
        "touch",
        "2026-02-20T09:00:00Z",
        event_id="anon-touch",
        anonymous_id="A1",
        touch_type="ad_click",
        channel="paid_social",
    )
    new_lead(s)
    s.event("lead_identified", "2026-03-02T10:05:00+01:00", lead_id="L1", anonymous_id="A1")
    s.event(
        "opportunity_created",
        "2026-03-10T10:00:00+01:00",
        lead_id="L1",
        opportunity_id="o1",
        amount="100.00",
        currency="EUR",
    )
    assert s.credits("first_touch") == {"anon-touch": 10000}
    # a later touch of the same visitor goes straight to the lead
    s.event(
        "touch",
        "2026-03-11T09:00:00Z",
        event_id="late",
        anonymous_id="A1",
        touch_type="page_view",
        channel="direct",
    )
    assert "late" in {t.event_id for t in s.state().touches}


def test_merge_moves_touches_into_the_survivor_and_forwards_later_events() -> None:
    s = new_lead(Scenario())
    new_lead(s, lead_id="L2")
    s.event(
        "touch",
        "2026-03-02T12:00:00Z",
        event_id="dup-touch",
        lead_id="L2",
        touch_type="webinar_attended",
        channel="webinar",
    )
    s.event("lead_merged", "2026-03-03T10:00:00Z", lead_id="L2", survivor_id="L1")
    assert "dup-touch" in {t.event_id for t in s.state("L1").touches}
    assert s.state("L2").merged_into == "L1"
    s.event("lead_accepted", "2026-03-04T10:00:00Z", lead_id="L2", rep_id="rep-emea-1")
    assert s.transitions("L1")[-1][1] == "sal"


def test_erasure_removes_personal_data_and_emits_an_erased_snapshot() -> None:
    s = new_lead(Scenario(), email="ada@example.com")
    s.event("lead_erased", "2026-03-05T10:00:00Z", lead_id="L1")
    assert dict(s.state().attributes) == {}
    assert s.replayer.lead_latest()["L1"].erased
    s.event(
        "lead_updated",
        "2026-03-06T10:00:00Z",
        lead_id="L1",
        attributes={"email": "again@example.com"},
    )
    assert dict(s.state().attributes) == {}


def test_weekly_mql_target_is_reported_when_the_week_ends() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-03T11:00:00+01:00")
    s.until("2026-03-10T00:00:00+01:00")
    weekly = s.sla_final("mql_weekly_target")
    assert (weekly.team_id, weekly.actual, weekly.target, weekly.status) == (
        "emea",
        1,
        DEFS.teams["emea"].weekly_mql_target,  # the packaged target (12), above one MQL
        "breached",
    )


def test_a_week_without_any_mql_is_reported_as_a_breach_for_every_team() -> None:
    s = new_lead(Scenario())
    demo_request(s, "2026-03-03T11:00:00+01:00")  # one EMEA MQL in the week of 2 March
    s.until("2026-03-17T00:00:00+01:00")  # two weeks later
    weekly = [r for r in s if getattr(r, "policy", None) == "mql_weekly_target"]
    # weeks start at the team's local Monday midnight (records carry it as a UTC instant)
    zone = {"emea": ZoneInfo("Europe/Berlin"), "amer": ZoneInfo("America/New_York")}
    seen = {
        (r.team_id, r.started_at.astimezone(zone[r.team_id]).date().isoformat(), r.actual)  # type: ignore[union-attr]
        for r in weekly
    }
    assert all(r.started_at.tzinfo is UTC for r in weekly)  # type: ignore[union-attr]
    assert ("emea", "2026-03-02", 1) in seen
    assert ("emea", "2026-03-09", 0) in seen  # nothing that week: still reported
    assert ("amer", "2026-03-02", 0) in seen and ("amer", "2026-03-09", 0) in seen
    assert all(r.status == "breached" for r in weekly)  # type: ignore[union-attr]
