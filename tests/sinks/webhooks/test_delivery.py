"""Delivery against a real HTTP receiver on loopback: retries, Retry-After, 4xx, 410, timeouts,
a receiver that is down, grouping and rate limits, order, and nothing after the fact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sinks.webhooks.notifier import Notifier
from streams import metrics

from .conftest import serve_for, serve_until, sla_record, standard_endpoint
from .receiver import Receiver, new_secret


def _alerts(url: str, **endpoint: Any) -> dict[str, Any]:
    return {
        "endpoints": {"hook": standard_endpoint(url, **endpoint)},
        "teams": {"emea": ["hook"]},
        "routes": {"warned": ["owner"], "breached": ["manager"], "escalated": ["escalate_to"]},
        "marketing_owner": "mkt-owner",
    }


def _suppressed(reason: str) -> float:
    return metrics.ALERT_SUPPRESSED.labels(reason)._value.get()  # type: ignore[attr-defined]


def _all_signed(receiver: Receiver) -> bool:
    return all(r.verified_standard and r.verified_svix for r in receiver.requests)


async def _with(receiver: Receiver, body: Callable[[], Any]) -> None:
    await receiver.start()
    try:
        await body()
    finally:
        await receiver.stop()


def test_500_429_and_a_hang_are_retried_then_delivered_once(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(
        secrets=[secret], script=[500, ("retry-after", 429, 1), ("hang", 2), 503], default=202
    )

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url), secrets=secret)
        notifier.ingest([sla_record("i1", "breached", "breached")])
        await serve_until(notifier, lambda: receiver.delivered())
        ids = {r.headers["webhook-id"] for r in receiver.requests}
        assert len(receiver.requests) == 5 and len(ids) == 1  # the same webhook-id every time
        assert receiver.delivered() == {ids.pop(): 1}
        assert _all_signed(receiver)
        stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
        assert abs(stamps[-1] - time.time()) < 10  # each attempt's own timestamp, in UTC
        assert notifier.store.pending_retries() == 0

    asyncio.run(_with(receiver, scenario))


def test_retry_after_is_honoured(make_notifier: Callable[..., Notifier]) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], script=[("retry-after", 429, 2)], default=200)
    arrivals: list[float] = []
    handle = receiver._handle

    async def timed(request: Any) -> Any:
        arrivals.append(time.monotonic())
        return await handle(request)

    receiver._handle = timed  # type: ignore[method-assign]

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url), secrets=secret)
        notifier.ingest([sla_record("i1", "breached", "breached")])
        await serve_until(notifier, lambda: bool(receiver.delivered()))

    asyncio.run(_with(receiver, scenario))
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.9  # the base delay is 0.2 s: Retry-After won


def test_400_is_not_retried_and_410_disables_the_endpoint(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], script=[400, 410], default=200)

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url), secrets=secret)
        notifier.ingest([sla_record("i1", "breached", "breached")])
        await serve_until(notifier, lambda: len(receiver.requests) == 1)
        notifier.ingest([sla_record("i2", "breached", "breached")])
        await serve_until(notifier, lambda: "hook" in notifier.store.disabled())
        notifier.ingest([sla_record("i3", "breached", "breached")])
        await serve_for(notifier, 0.8)  # nothing more goes out
        assert [r.status for r in receiver.requests] == [400, 410]  # nothing after the 410
        counts = notifier.store.counts()["hook"]
        assert counts["alerts_failed"] == 1 and counts["alerts_disabled"] == 1
        assert counts["alerts_pending"] == 1  # kept for when the endpoint is fixed
        assert {m["status"] for m in notifier.store.unreported()} == {"rejected", "disabled"}

    asyncio.run(_with(receiver, scenario))


def test_a_receiver_that_is_down_gets_everything_once_when_it_is_back(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=200)

    async def scenario() -> None:
        from leadflow.stack import free_port

        receiver.port = free_port()
        notifier = make_notifier(_alerts(receiver.url, max_in_flight=4), secrets=secret)
        records = [sla_record(f"i{n}", "breached", "breached") for n in range(10)]
        notifier.ingest(records)
        notifier.ingest(records)  # a re-delivery changes nothing
        await serve_until(notifier, lambda: notifier.store.pending_retries() == 10)
        await receiver.start()
        try:
            await serve_until(notifier, lambda: len(receiver.delivered()) == 10)
            await asyncio.sleep(0.5)
        finally:
            await receiver.stop()
        assert set(receiver.delivered().values()) == {1}
        assert _all_signed(receiver)

    asyncio.run(scenario())


def test_order_warned_breached_escalated_holds_per_instance(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=200)
    now = datetime.now(UTC)

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url, max_in_flight=8), secrets=secret)
        for n in range(5):
            notifier.ingest([sla_record(f"a{n}", "warned", "open", at=now - timedelta(seconds=3))])
            notifier.ingest(
                [sla_record(f"a{n}", "breached", "breached", at=now - timedelta(seconds=2))]
            )
            notifier.ingest(
                [sla_record(f"a{n}", "escalated", "breached", at=now - timedelta(seconds=1))]
            )
        await serve_until(notifier, lambda: len(receiver.delivered()) == 10)
        await serve_for(notifier, 0.3)  # nothing more goes out
        assert len(receiver.requests) == 10
        assert notifier.store.counts()["hook"]["alerts_suppressed"] == 5  # the warnings

    asyncio.run(_with(receiver, scenario))
    kinds: dict[str, list[str]] = {}
    for r in receiver.requests:
        kinds.setdefault(r.json["instance_id"], []).append(r.json["type"])
    # the warnings arrived with their breach before they could go: a warning after the breach
    # would be after the fact, so only breach → escalation goes, in that order
    assert kinds == {f"a{n}": ["sla.breached", "sla.escalated"] for n in range(5)}


def test_order_holds_while_an_earlier_message_is_retried(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], script=[500, 500], default=200)

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url, max_in_flight=8), secrets=secret)
        notifier.ingest([sla_record("x", "warned", "open")])
        await serve_until(notifier, lambda: len(receiver.requests) >= 1)
        notifier.ingest([sla_record("x", "open-still", "open")])  # e.g. a started/met of another
        await serve_until(notifier, lambda: len(receiver.delivered()) == 1)
        notifier.ingest([sla_record("x", "breached", "breached")])
        notifier.ingest(
            [sla_record("x", "escalated", "breached", at=datetime.now(UTC) + timedelta(seconds=1))]
        )
        await serve_until(notifier, lambda: len(receiver.delivered()) == 3)

    asyncio.run(_with(receiver, scenario))
    sent = [r.json["type"] for r in receiver.requests if r.status == 200]
    assert sent == ["sla.warned", "sla.breached", "sla.escalated"]


def test_a_breach_corrected_during_the_grouping_wait_is_never_sent(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=200)

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url, group_wait_s=0.6), secrets=secret)
        before = _suppressed("corrected"), _suppressed("nothing_to_retract")
        notifier.ingest([sla_record("c1", "breached", "breached")])
        notifier.ingest([sla_record("c1", "corrected", "met", met_at="2026-01-01T00:00:00Z")])
        notifier.ingest([sla_record("c2", "breached", "breached")])  # a real one beside it
        await serve_until(notifier, lambda: len(receiver.delivered()) == 1)
        await serve_for(notifier, 0.8)  # nothing more goes out
        assert [r.json["instance_id"] for r in receiver.requests] == ["c2"]
        assert _suppressed("corrected") == before[0] + 1
        assert _suppressed("nothing_to_retract") == before[1] + 1

    asyncio.run(_with(receiver, scenario))


def test_a_breach_corrected_while_retrying_is_dropped_or_retracted(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Nothing after the fact: a breach that failed with 500 is dropped (nobody was told); one
    whose attempt timed out may have been seen, so its correction is sent."""
    secret = new_secret()
    receiver = Receiver(secrets=[secret], plan={"r500": [500], "rhang": [("hang", 1.5)]})

    async def scenario() -> None:
        alerts = {
            **_alerts(receiver.url, max_in_flight=2),
            "delivery": {"timeout_s": 0.5, "retry_base_s": 2},
        }
        notifier = make_notifier(alerts, secrets=secret)
        notifier.ingest(
            [
                sla_record("r500", "breached", "breached"),
                sla_record("rhang", "breached", "breached"),
            ]
        )
        await serve_until(notifier, lambda: notifier.store.pending_retries() == 2)
        notifier.ingest([sla_record("r500", "corrected", "met", met_at="2026-01-01T00:00:00Z")])
        notifier.ingest([sla_record("rhang", "corrected", "met", met_at="2026-01-01T00:00:00Z")])
        await serve_until(notifier, lambda: len(receiver.delivered()) == 1)
        await serve_for(notifier, 0.8)  # nothing more goes out

    asyncio.run(_with(receiver, scenario))
    delivered = [
        (r.json["instance_id"], r.json["type"]) for r in receiver.requests if r.status == 200
    ]
    assert delivered == [("rhang", "sla.corrected")]
    assert "was wrong" in receiver.requests[-1].json["text"]


def test_several_alerts_for_one_channel_go_as_one_digest_within_the_rate_limit(
    make_notifier: Callable[..., Notifier],
) -> None:
    receiver = Receiver(default=200)
    arrivals: list[float] = []
    handle = receiver._handle

    async def timed(request: Any) -> Any:
        arrivals.append(time.monotonic())
        return await handle(request)

    receiver._handle = timed  # type: ignore[method-assign]

    async def scenario() -> None:
        alerts = {
            "endpoints": {
                "chan": {
                    "format": "slack",
                    "url": receiver.url,
                    "group_wait_s": 0.5,
                    "rate_per_s": 1,
                }
            },
            "teams": {"emea": ["chan"]},
            "routes": {"breached": ["manager", "owner"]},
            "marketing_owner": "mkt-owner",
        }
        notifier = make_notifier(alerts)
        notifier.ingest([sla_record(f"d{n}", "breached", "breached") for n in range(4)])
        await serve_until(notifier, lambda: len(receiver.requests) == 1)
        notifier.ingest([sla_record(f"e{n}", "breached", "breached") for n in range(3)])
        notifier._next_send["chan"] = time.time() + 1.0  # as if a message had just gone
        await serve_until(notifier, lambda: len(receiver.requests) == 2)

    asyncio.run(_with(receiver, scenario))
    first, second = receiver.requests[0].json, receiver.requests[1].json
    assert first["blocks"][0]["text"]["text"] == "4 leadflow SLA alerts"
    assert len(first["blocks"]) == 5 and "lead-d3" in first["text"]
    assert "Lena Hoffmann, Anna Schulz" in first["text"]  # manager and rep told in one message
    assert len(second["blocks"]) == 4
    assert arrivals[1] - arrivals[0] >= 0.9


def test_warnings_are_held_to_the_next_opening_in_quiet_hours(
    make_notifier: Callable[..., Notifier],
) -> None:
    saturday = datetime(2026, 3, 14, 12, 0, tzinfo=UTC).timestamp()
    notifier = make_notifier(
        {**_alerts("http://127.0.0.1:9/x"), "quiet_hours": {"warned": "hold", "breached": "send"}},
        secrets=new_secret(),
        clock=lambda: saturday,
    )
    at = datetime.fromtimestamp(saturday, UTC)
    notifier.ingest(
        [sla_record("q1", "warned", "open", at=at), sla_record("q2", "breached", "breached", at=at)]
    )
    pending = {a["instance_id"]: a["not_before"] for a in notifier.store.pending_alerts("hook")}
    monday_9_berlin = datetime(2026, 3, 16, 8, 0, tzinfo=UTC).timestamp()
    assert pending == {"q1": monday_9_berlin, "q2": saturday}


def test_stale_records_of_a_backfill_are_never_alerted(
    make_notifier: Callable[..., Notifier],
) -> None:
    notifier = make_notifier(_alerts("http://127.0.0.1:9/x"), secrets=new_secret())
    old = datetime.now(UTC) - timedelta(days=3)
    assert notifier.ingest([sla_record("s1", "breached", "breached", at=old)]) == 0


def test_a_missed_weekly_target_reaches_marketing_with_the_counts(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=202)

    async def scenario() -> None:
        alerts = {
            "endpoints": {"mkt": standard_endpoint(receiver.url)},
            "people": {"mkt-owner": ["mkt"]},
            "marketing_owner": "mkt-owner",
            "routes": {"target_missed": ["marketing_owner"]},
        }
        notifier = make_notifier(alerts, secrets=secret)
        week = sla_record(
            "week-emea-2026-03-09",
            "breached",
            "breached",
            policy="mql_weekly_target",
            owner_id="mgr-emea",
            lead_id=None,
            target=40,
            actual=12,
        )
        met = {
            **sla_record("week-amer", "met", "met", policy="mql_weekly_target", lead_id=None),
            "target": 60,
            "actual": 70,
        }
        notifier.ingest([week, met])  # a met week tells nobody
        await serve_until(notifier, lambda: bool(receiver.delivered()))
        await serve_for(notifier, 0.3)

    asyncio.run(_with(receiver, scenario))
    (request,) = receiver.requests
    body = request.json
    assert (body["type"], body["target"], body["actual"], body["lead_id"]) == (
        "mql_target.missed",
        40,
        12,
        None,
    )
    assert body["recipients"] == ["mkt-owner"]
    assert "12 of 40 MQLs" in body["text"]
    assert body["dashboard_url"].endswith("/d/leadflow-marketing/marketing")


def test_metrics_count_deliveries_retries_and_the_delay(
    make_notifier: Callable[..., Notifier],
) -> None:
    secret = new_secret()
    receiver = Receiver(secrets=[secret], script=[500], default=200)

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    sent = {"endpoint": "metric-hook", "outcome": "sent"}
    retry = {"endpoint": "metric-hook", "outcome": "retry"}
    fast = {"le": "1.0"}
    before = (
        sample("leadflow_alert_deliveries_total", sent),
        sample("leadflow_alert_deliveries_total", retry),
        sample("leadflow_alert_delivery_delay_seconds_count"),
        sample("leadflow_alert_delivery_delay_seconds_bucket", fast),
    )

    async def scenario() -> None:
        alerts = {
            **_alerts(receiver.url),
            "endpoints": {"metric-hook": standard_endpoint(receiver.url)},
            "teams": {"emea": ["metric-hook"]},
        }
        notifier = make_notifier(alerts, secrets=secret)
        notifier.ingest(
            [sla_record("m1", "breached", "breached", at=datetime.now(UTC) - timedelta(seconds=2))]
        )
        await serve_until(notifier, lambda: bool(receiver.delivered()))

    asyncio.run(_with(receiver, scenario))
    assert sample("leadflow_alert_deliveries_total", sent) == before[0] + 1
    assert sample("leadflow_alert_deliveries_total", retry) == before[1] + 1
    assert sample("leadflow_alert_delivery_delay_seconds_count") == before[2] + 1
    # the record's instant was 2 s before: not observed as a fast delivery
    assert sample("leadflow_alert_delivery_delay_seconds_bucket", fast) == before[3]


def test_teams_answers_202_and_that_is_success(make_notifier: Callable[..., Notifier]) -> None:
    receiver = Receiver(default=202)

    async def scenario() -> None:
        alerts = {
            "endpoints": {"teams": {"format": "teams", "url": receiver.url, "group_wait_s": 0}},
            "teams": {"emea": ["teams"]},
            "marketing_owner": "mkt-owner",
        }
        notifier = make_notifier(alerts)
        notifier.ingest([sla_record("t1", "breached", "breached")])
        await serve_until(notifier, lambda: bool(receiver.requests))
        await serve_for(notifier, 0.5)
        assert notifier.store.counts()["teams"]["alerts_sent"] == 1

    asyncio.run(_with(receiver, scenario))
    (request,) = receiver.requests  # 202 is not retried
    assert request.json["attachments"][0]["content"]["type"] == "AdaptiveCard"
    assert "webhook-signature" not in request.headers


def test_an_older_revision_arriving_late_tells_nobody(
    make_notifier: Callable[..., Notifier],
) -> None:
    """Records may carry a revision (the core re-folds late events): the newest revision is the
    instance's state whatever the arrival order, and a stale breach is never sent."""
    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=200)

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url, group_wait_s=0.3), secrets=secret)
        corrected = sla_record("v1", "corrected", "met", revision=3)
        stale = sla_record("v1", "breached", "breached", revision=2)
        notifier.ingest([corrected, stale])
        fresh = sla_record("v2", "breached", "breached", revision=1)
        notifier.ingest([fresh])
        await serve_until(notifier, lambda: bool(receiver.delivered()))
        await serve_for(notifier, 0.5)
        latest = notifier.store.instance("v1")
        assert latest is not None and (latest.revision, latest.event) == (3, "corrected")

    asyncio.run(_with(receiver, scenario))
    assert [r.json["instance_id"] for r in receiver.requests] == ["v2"]


def test_corrections_of_the_re_folding_core_are_told_as_what_they_mean(
    make_notifier: Callable[..., Notifier],
) -> None:
    """The core re-folds late events: `corrected` with status breached (told met, in fact
    breached) is a breach; a retraction (`deleted`, event `retracted`) withdraws a told breach."""
    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=200)

    async def scenario() -> None:
        notifier = make_notifier(_alerts(receiver.url), secrets=secret)
        notifier.ingest([sla_record("f1", "met", "met", revision=1)])
        notifier.ingest([sla_record("f1", "corrected", "breached", revision=2)])
        notifier.ingest([sla_record("f2", "breached", "breached", revision=1)])
        await serve_until(notifier, lambda: len(receiver.delivered()) == 2)
        retraction = sla_record("f2", "retracted", "breached", revision=2, deleted=True)
        notifier.ingest([retraction])
        await serve_until(notifier, lambda: len(receiver.delivered()) == 3)
        await serve_for(notifier, 0.3)

    asyncio.run(_with(receiver, scenario))
    told = [(r.json["instance_id"], r.json["type"]) for r in receiver.requests]
    assert sorted(told[:2]) == [("f1", "sla.breached"), ("f2", "sla.breached")]
    assert told[2:] == [("f2", "sla.corrected")]
    assert len(receiver.requests) == 3
