"""Message bodies: Slack (text + Block Kit), Teams Workflows (Adaptive Card), Standard Webhooks JSON.

Every message says who is told, which lead (with a dashboard link), which policy, the due time
in the recipient team's time zone, how late, and what to do. A retraction says plainly that
the earlier breach was wrong and why. Bodies are deterministic for a given set of alerts (late
times are measured at the SLA record's instant, not at sending), so a retry sends the same body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from standardwebhooks import Webhook

from sinks.webhooks.endpoints import Endpoint
from sinks.webhooks.routing import Kind, Recipient
from streams.core.definitions import Definitions

MAX_ALERTS_PER_MESSAGE = 20  # Slack allows 50 blocks, Teams ~28 KB: 20 alerts stay under both

TYPE_OF_KIND = {
    Kind.WARNED: "sla.warned",
    Kind.BREACHED: "sla.breached",
    Kind.ESCALATED: "sla.escalated",
    Kind.CORRECTED: "sla.corrected",
    Kind.TARGET_MISSED: "mql_target.missed",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing to tell over one endpoint: the SLA record it comes from and who is told."""

    alert_id: str
    kind: Kind
    endpoint: str
    record: Mapping[str, Any]
    recipients: tuple[Recipient, ...]


def _at(value: object) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def dashboard_url(base: str, record: Mapping[str, Any]) -> str:
    """The dashboard showing this record's lead (or marketing's targets)."""
    base = base.rstrip("/")
    if record.get("lead_id") is None:
        return f"{base}/d/leadflow-marketing/marketing"
    return f"{base}/d/leadflow-sales/sales?var-lead_id={quote(str(record['lead_id']))}"


def late_by_seconds(alert: Alert) -> int:
    """How late the promise is at the record's instant (0 for a warning or a correction)."""
    if alert.kind not in (Kind.BREACHED, Kind.ESCALATED):
        return 0
    at, due = _at(alert.record.get("at")), _at(alert.record.get("due_at"))
    return max(0, int((at - due).total_seconds())) if at and due else 0


class Renderer:
    """Words and payloads of alerts, with the org chart and the dashboard base URL."""

    def __init__(self, defs: Definitions, dashboard_base_url: str) -> None:
        self.defs = defs
        self.base = dashboard_base_url

    def _local(self, value: object, team_id: str) -> str:
        at = _at(value)
        if at is None:
            return "-"
        team = self.defs.teams.get(team_id) or self.defs.teams[self.defs.default_team_id]
        return at.astimezone(team.calendar.tz).strftime("%a %d %b %Y %H:%M %Z")

    def _name(self, person_id: object) -> str:
        person = self.defs.people.get(str(person_id)) if person_id else None
        return f"{person.name} ({person.id})" if person else "nobody (unassigned)"

    def _policy(self, name: str) -> str:
        policy = self.defs.sla_policy_by_name.get(name)
        if policy is None:
            return name
        hours = policy.business_seconds / 3600
        return f"{name} ({hours:g} business hours from {policy.starts_at})"

    def sentence(self, alert: Alert) -> tuple[str, str]:
        """(headline, what happened and what to do) in words, times in the recipient's zone."""
        r = alert.record
        team_id = alert.recipients[0].team_id if alert.recipients else str(r.get("team_id"))
        who = ", ".join(x.name for x in alert.recipients) or "-"
        lead = r.get("lead_id")
        due = self._local(r.get("due_at"), team_id)
        policy = self._policy(str(r.get("policy")))
        owner = self._name(r.get("owner_id"))
        if alert.kind is Kind.WARNED:
            left = _duration((_at(r["due_at"]) - _at(r["at"])).total_seconds())  # type: ignore[operator]
            return (
                f"SLA warning: lead {lead} is due {due}",
                f"For {who}. Policy {policy}; owner {owner}. Due {due}, about {left} of clock "
                "time left. What to do: contact the lead (call, email or meeting) before the "
                "deadline, or hand it to a colleague.",
            )
        if alert.kind is Kind.BREACHED:
            late = _duration(late_by_seconds(alert))
            return (
                f"SLA breached: lead {lead}, {late} late",
                f"For {who}. Policy {policy}; owner {owner}. It was due {due} and is {late} late. "
                "What to do: the owner contacts the lead now; the manager reassigns the lead if "
                "the owner cannot.",
            )
        if alert.kind is Kind.ESCALATED:
            late = _duration(late_by_seconds(alert))
            return (
                f"SLA escalated: lead {lead} still untouched, {late} late",
                f"For {who}. Policy {policy}; owner {owner}, manager "
                f"{self._name(self.defs.manager_of(str(r.get('owner_id'))))}. It was due {due} "
                f"and is {late} late, past the escalation window. What to do: step in today — "
                "reassign the lead or make sure it is contacted.",
            )
        if alert.kind is Kind.CORRECTED:
            met = self._local(r.get("met_at"), team_id)
            return (
                f"Correction: the breach for lead {lead} was wrong",
                f"For {who}. The earlier alert that policy {policy} was breached for lead {lead} "
                f"(owner {owner}) was wrong: an event that reached leadflow late (CRM sync lag) "
                f"shows it was met at {met}, before the deadline {due}. What to do: nothing; "
                "disregard the earlier breach alert.",
            )
        team = self.defs.teams.get(str(r.get("team_id")))
        start = self._local(r.get("started_at"), team_id)
        return (
            f"Weekly MQL target missed: {team.name if team else r.get('team_id')}",
            f"For {who}. Marketing delivered {r.get('actual')} of {r.get('target')} MQLs to "
            f"{team.name if team else r.get('team_id')} in the week from {start} to {due}. What "
            "to do: marketing reviews the campaign mix and lead flow for this team with the "
            "sales manager this week.",
        )

    def payload(self, alert: Alert) -> dict[str, Any]:
        """The generic endpoint's JSON for one alert (DESIGN.md §8)."""
        r = alert.record
        body: dict[str, Any] = {
            "type": TYPE_OF_KIND[alert.kind],
            "id": alert.alert_id,
            "occurred_at": r.get("at"),
            "lead_id": r.get("lead_id"),
            "policy": r.get("policy"),
            "owner_id": r.get("owner_id"),
            "team_id": r.get("team_id"),
            "due_at": r.get("due_at"),
            "late_by_seconds": late_by_seconds(alert),
            "escalate_to": r.get("escalate_to"),
            "dashboard_url": dashboard_url(self.base, r),
            "definitions_version": r.get("definitions_version"),
            "instance_id": r.get("instance_id"),
            "sla_record_id": r.get("record_id"),
            "recipients": [x.person_id or f"team:{x.team_id}" for x in alert.recipients],
            "text": " ".join(self.sentence(alert)),
        }
        if alert.kind is Kind.CORRECTED:
            body["met_at"] = r.get("met_at")
        if alert.kind is Kind.TARGET_MISSED:
            body["target"], body["actual"] = r.get("target"), r.get("actual")
        return body

    def body(self, fmt: str, message_id: str, alerts: Sequence[Alert]) -> str:
        """The exact request body text for `alerts` (one, or a digest) in `fmt`."""
        if fmt == "standard":
            if len(alerts) == 1:
                return orjson.dumps(self.payload(alerts[0])).decode()
            digest = {
                "type": "sla.digest",
                "id": message_id,
                "alerts": [self.payload(a) for a in alerts],
            }
            return orjson.dumps(digest).decode()
        lines = [(self.sentence(a), dashboard_url(self.base, a.record)) for a in alerts]
        if fmt == "slack":
            return orjson.dumps(self._slack(lines)).decode()
        return orjson.dumps(self._teams(lines)).decode()

    @staticmethod
    def _slack(lines: list[tuple[tuple[str, str], str]]) -> dict[str, Any]:
        title = lines[0][0][0] if len(lines) == 1 else f"{len(lines)} leadflow SLA alerts"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}
        ]
        for (headline, detail), url in lines:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f"*{headline}*\n{detail}\n<{url}|Open dashboard>",
                    },
                }
            )
        text = "\n".join(f"{h}. {d} {u}" for (h, d), u in lines)
        return {"text": text, "blocks": blocks}

    @staticmethod
    def _teams(lines: list[tuple[tuple[str, str], str]]) -> dict[str, Any]:
        title = lines[0][0][0] if len(lines) == 1 else f"{len(lines)} leadflow SLA alerts"
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
        ]
        actions = []
        for i, ((headline, detail), url) in enumerate(lines):
            body.append({"type": "TextBlock", "text": headline, "weight": "Bolder", "wrap": True})
            body.append({"type": "TextBlock", "text": detail, "wrap": True})
            body.append({"type": "TextBlock", "text": f"[Open dashboard]({url})", "wrap": True})
            if i < 5:
                actions.append(
                    {"type": "Action.OpenUrl", "title": f"Dashboard {i + 1}", "url": url}
                )
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "actions": actions,
        }
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card,
                }
            ],
        }


def sign(endpoint: Endpoint, message_id: str, body: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers for one attempt: one `v1,` signature per secret (rotation).

    The body is passed as text and the timestamp in UTC (INFRA.md: bytes or a non-UTC
    timestamp sign the wrong thing)."""
    at = now.astimezone(UTC).replace(microsecond=0)
    signatures = [
        Webhook(secret.get_secret_value()).sign(message_id, at, body) for secret in endpoint.secrets
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
