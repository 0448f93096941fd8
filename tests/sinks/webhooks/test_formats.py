"""Message bodies say who, which lead, which policy, when (recipient's zone), how late, what to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from sinks.webhooks.endpoints import Endpoint
from sinks.webhooks.formats import Alert, Renderer, sign
from sinks.webhooks.routing import EndpointSpec, Kind, Recipient
from streams.definitions_file import load_definitions

from .conftest import sla_record
from .receiver import new_secret

DEFS = load_definitions()
RENDER = Renderer(DEFS, "https://grafana.example.com/")
DUE = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)  # 15:00 in Berlin, 10:00 in New York
ANNA = Recipient("rep-emea-1", "Anna Schulz", "emea", "owner")
LENA = Recipient("mgr-emea", "Lena Hoffmann", "emea", "manager")


def _breach() -> Alert:
    record = sla_record(
        "inst-1", "breached", "breached", at=DUE + timedelta(minutes=15), due_at=DUE
    )
    return Alert("a1", Kind.BREACHED, "x", record, (LENA, ANNA))


def test_slack_has_a_text_fallback_and_blocks_with_everything_said() -> None:
    body = orjson.loads(RENDER.body("slack", "a1", [_breach()]))
    assert body["blocks"][0]["type"] == "header"
    for text in (body["text"], body["blocks"][1]["text"]["text"]):
        assert "Lena Hoffmann" in text and "Anna Schulz" in text  # who
        assert "lead-inst-1" in text  # which lead
        assert "mql_first_touch" in text  # which policy
        assert "Tue 10 Mar 2026 15:00 CET" in text  # due, in the recipient team's zone
        assert "15 min late" in text  # how late
        assert "What to do" in text
        assert "https://grafana.example.com/d/leadflow-sales/sales?var-lead_id=lead-inst-1" in text


def test_due_times_are_in_the_recipient_team_zone() -> None:
    marcus = Recipient("mgr-amer", "Marcus Cole", "amer", "manager")
    alert = _breach()
    alert = Alert("a1", alert.kind, "x", alert.record, (marcus,))
    assert "Tue 10 Mar 2026 10:00 EDT" in RENDER.sentence(alert)[1]


def test_teams_gets_an_adaptive_card_message() -> None:
    body = orjson.loads(RENDER.body("teams", "a1", [_breach()]))
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = " ".join(b["text"] for b in card["body"])
    assert "lead-inst-1" in texts and "What to do" in texts
    assert card["actions"][0]["type"] == "Action.OpenUrl"
    assert len(orjson.dumps(body)) < 28_000


def test_a_retraction_says_the_breach_was_wrong_and_why() -> None:
    record = sla_record(
        "inst-1",
        "corrected",
        "met",
        at=DUE + timedelta(hours=1),
        due_at=DUE,
        met_at="2026-03-10T13:40:00Z",
        corrected_at="2026-03-10T15:00:00Z",
    )
    headline, detail = RENDER.sentence(Alert("c1", Kind.CORRECTED, "x", record, (LENA,)))
    assert "was wrong" in headline
    assert "was wrong: an event that reached leadflow late" in detail
    assert (
        "met at Tue 10 Mar 2026 14:40 CET, before the deadline Tue 10 Mar 2026 15:00 CET" in detail
    )
    assert "disregard the earlier breach alert" in detail


def test_the_generic_payload_follows_the_design() -> None:
    payload = orjson.loads(RENDER.body("standard", "a1", [_breach()]))
    assert {
        "type",
        "id",
        "occurred_at",
        "lead_id",
        "policy",
        "owner_id",
        "team_id",
        "due_at",
        "late_by_seconds",
        "escalate_to",
        "dashboard_url",
        "definitions_version",
    } <= set(payload)
    assert payload["type"] == "sla.breached" and payload["id"] == "a1"
    assert payload["late_by_seconds"] == 900
    assert payload["due_at"] == "2026-03-10T14:00:00Z"
    digest = orjson.loads(RENDER.body("standard", "d1", [_breach(), _breach()]))
    assert digest["type"] == "sla.digest" and len(digest["alerts"]) == 2


def _endpoint(*secrets: str) -> Endpoint:
    spec = EndpointSpec("h", "standard", None, "http://127.0.0.1/", "S", 1, 0, 0, 1, False, False)
    return Endpoint(spec, SecretStr("http://127.0.0.1/"), tuple(SecretStr(s) for s in secrets))


def test_signatures_verify_with_standardwebhooks_and_svix_across_a_rotation() -> None:
    new, old = new_secret(), new_secret()
    body = RENDER.body("standard", "msg_1", [_breach()])
    headers = sign(_endpoint(new, old), "msg_1", body, datetime.now(UTC))
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (new, old):  # a receiver still on the old secret, or already on the new one
        StandardWebhook(secret).verify(body, headers)
        SvixWebhook(secret).verify(body, headers)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new).verify(body.replace("breached", "met"), headers)


def test_a_non_utc_clock_still_signs_correctly() -> None:
    from zoneinfo import ZoneInfo

    secret = new_secret()
    body = RENDER.body("standard", "msg_2", [_breach()])
    headers = sign(_endpoint(secret), "msg_2", body, datetime.now(ZoneInfo("Europe/Berlin")))
    StandardWebhook(secret).verify(body, headers)
    SvixWebhook(secret).verify(body, headers)
