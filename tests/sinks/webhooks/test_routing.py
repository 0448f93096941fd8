"""The alerts: section: refused at load naming the key; recipients from the org chart; SSRF."""

from __future__ import annotations

from typing import Any

import pytest

from sinks.webhooks.endpoints import check_url, resolve_endpoints
from sinks.webhooks.errors import AlertsConfigError, UnsafeEndpoint
from sinks.webhooks.routing import Kind, load_alerts, recipients
from streams.core.definitions import definitions_from_mapping
from streams.definitions_file import PUBLIC_HOLIDAYS, load_definitions

from .conftest import defs_with, sla_record

ENDPOINTS = {
    "emea-channel": {"format": "slack", "url_env": "EMEA_URL"},
    "anna-dm": {"format": "slack", "url_env": "ANNA_URL"},
    "lena-hook": {"format": "standard", "url_env": "LENA_URL", "secrets_env": "LENA_SECRETS"},
}


def _alerts(**extra: Any) -> dict[str, Any]:
    return {
        "endpoints": ENDPOINTS,
        "people": {"rep-emea-1": ["anna-dm"], "mgr-emea": ["lena-hook"]},
        "teams": {"emea": ["emea-channel"]},
        "marketing_owner": "mkt-owner",
        **extra,
    }


def test_the_packaged_default_loads_without_any_environment() -> None:
    defs = load_definitions()
    config = load_alerts(defs)
    assert config.marketing_owner == "mkt-owner"
    assert {"slack", "teams", "standard"} == {e.format for e in config.endpoints.values()}
    with pytest.raises(AlertsConfigError, match="LEADFLOW_ALERTS_SLACK_EMEA_URL is not set"):
        resolve_endpoints(config, {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"people": {"nobody": ["anna-dm"]}}, "alerts.people.nobody: unknown person"),
        (
            {"people": {"rep-emea-1": ["nowhere"]}},
            r"alerts.people.rep-emea-1\[0\]: unknown endpoint 'nowhere'",
        ),
        ({"teams": {"apac": ["emea-channel"]}}, "alerts.teams.apac: unknown team"),
        ({"teams": {"emea": ["nowhere"]}}, r"alerts.teams.emea\[0\]: unknown endpoint"),
        (
            {"routes": {"breached": ["owner", "ceo"]}},
            r"alerts.routes.breached\[1\]: unknown role 'ceo'",
        ),
        ({"routes": {"exploded": ["owner"]}}, "alerts.routes.exploded: unknown alert kind"),
        ({"routes": {"corrected": ["owner"]}}, "alerts.routes.corrected: a correction always goes"),
        ({"marketing_owner": "ghost"}, "alerts.marketing_owner: unknown person 'ghost'"),
        ({"quiet_hours": {"warned": "snooze"}}, "alerts.quiet_hours.warned: must be hold or send"),
        ({"colour": "red"}, r"alerts.<section>.colour: unknown key"),
        (
            {"endpoints": {**ENDPOINTS, "bad": {"format": "standard", "url_env": "X"}}},
            "alerts.endpoints.bad.secrets_env: missing",
        ),
        (
            {"endpoints": {"x": {"format": "email", "url": "https://x"}}},
            "alerts.endpoints.x.format",
        ),
    ],
)
def test_bad_alerts_sections_are_refused_naming_the_key(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(AlertsConfigError, match=message):
        load_alerts(defs_with(_alerts(**change)))


def test_recipients_come_from_the_org_chart() -> None:
    defs = defs_with(
        _alerts(routes={"breached": ["owner", "manager"], "escalated": ["escalate_to", "team"]})
    )
    config = load_alerts(defs)
    breached = recipients(Kind.BREACHED, sla_record("i1", "breached", "breached"), config, defs)
    assert {k: [r.person_id for r in v] for k, v in breached.items()} == {
        "anna-dm": ["rep-emea-1"],
        "lena-hook": ["mgr-emea"],
    }
    # a rep without endpoints of their own is told in the team channel
    other = recipients(
        Kind.BREACHED, sla_record("i2", "breached", "breached", owner_id="rep-emea-2"), config, defs
    )
    assert [r.person_id for r in other["emea-channel"]] == ["rep-emea-2"]
    # escalate_to: the manager's manager (a director without team or endpoints: the team channel)
    escalated = recipients(Kind.ESCALATED, sla_record("i3", "escalated", "breached"), config, defs)
    assert [(r.person_id, r.role) for r in escalated["emea-channel"]] == [
        ("dir-emea", "escalate_to"),
        (None, "team"),
    ]


def test_a_lead_without_owner_goes_to_its_team_manager() -> None:
    defs = defs_with(_alerts(routes={"warned": ["owner"]}))
    config = load_alerts(defs)
    told = recipients(Kind.WARNED, sla_record("i4", "warned", "open", owner_id=None), config, defs)
    assert {k: [r.person_id for r in v] for k, v in told.items()} == {"lena-hook": ["mgr-emea"]}


def test_weekly_target_missed_goes_to_marketing_and_the_team_manager() -> None:
    defs = defs_with(_alerts(people={"mgr-emea": ["lena-hook"], "mkt-owner": ["anna-dm"]}))
    config = load_alerts(defs)
    record = sla_record(
        "w1",
        "breached",
        "breached",
        policy="mql_weekly_target",
        owner_id="mgr-emea",
        lead_id=None,
        target=40,
        actual=12,
    )
    told = recipients(Kind.TARGET_MISSED, record, config, defs)
    assert {k: [r.person_id for r in v] for k, v in told.items()} == {
        "anna-dm": ["mkt-owner"],
        "lena-hook": ["mgr-emea"],
    }


def test_endpoint_urls_and_secrets_come_from_the_environment() -> None:
    config = load_alerts(defs_with(_alerts()))
    env = {
        "EMEA_URL": "https://hooks.slack.com/services/T/B/x",
        "ANNA_URL": "https://hooks.slack.com/services/T/B/y",
        "LENA_URL": "https://example.com/hook",
    }
    with pytest.raises(AlertsConfigError, match="LENA_SECRETS is not set"):
        resolve_endpoints(config, env, resolve=lambda host: ["93.184.215.14"])
    with pytest.raises(
        AlertsConfigError, match="secret #2 in LENA_SECRETS does not start with whsec_"
    ):
        resolve_endpoints(
            config,
            {**env, "LENA_SECRETS": "whsec_aaaa plain"},
            resolve=lambda host: ["93.184.215.14"],
        )
    endpoints = resolve_endpoints(
        config,
        {**env, "LENA_SECRETS": "whsec_aaaa whsec_bbbb"},
        resolve=lambda host: ["93.184.215.14"],
    )
    assert len(endpoints["lena-hook"].secrets) == 2
    assert endpoints["emea-channel"].label == "https://hooks.slack.com"  # never the token path
    assert "services" not in repr(endpoints["emea-channel"])


@pytest.mark.parametrize(
    ("url", "allow", "resolved", "problem"),
    [
        ("http://example.com/hook", False, ["93.184.215.14"], "HTTPS is required"),
        ("https://10.1.2.3/hook", False, [], "private, link-local or metadata"),
        ("https://169.254.169.254/latest/meta-data", False, [], "private, link-local or metadata"),
        ("https://[fd00:ec2::254]/", False, [], "private, link-local or metadata"),
        ("https://internal.corp/hook", False, ["192.168.1.20"], "private, link-local or metadata"),
        ("https://nowhere.invalid/hook", False, [], "does not resolve"),
        ("ftp://example.com/x", False, [], "must be http"),
    ],
)
def test_ssrf_unsafe_urls_are_refused(
    url: str, allow: bool, resolved: list[str], problem: str
) -> None:
    with pytest.raises(UnsafeEndpoint, match=problem):
        check_url("x", url, allow, resolve=lambda host: resolved)


def test_loopback_may_be_plain_http_and_private_needs_an_explicit_allow() -> None:
    check_url("x", "http://127.0.0.1:8080/hook", False)
    check_url("x", "http://localhost:8080/hook", False, resolve=lambda host: ["127.0.0.1", "::1"])
    check_url("x", "https://10.1.2.3/hook", True)
    check_url("x", "https://hooks.slack.com/services/x", False, resolve=lambda host: ["34.1.2.3"])


def test_the_core_keeps_the_section_raw_but_refuses_a_non_mapping() -> None:
    from streams.core.errors import DefinitionsError

    from .conftest import base_mapping

    data = base_mapping()
    data["alerts"] = ["not", "a", "mapping"]
    with pytest.raises(DefinitionsError, match="alerts: must be a mapping"):
        definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)
    data["alerts"] = {"whatever": {"the": "notifier checks it"}}
    assert definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS).alerts == {
        "whatever": {"the": "notifier checks it"}
    }
