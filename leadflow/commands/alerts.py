"""`leadflow alerts` (the notifier) and `alerts test | status | replay`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from leadflow.cli import app, build_settings
from leadflow.settings import Settings
from schemas.errors import LeadflowError
from sinks.webhooks.endpoints import Endpoint, resolve_endpoints
from sinks.webhooks.routing import AlertsConfig, Kind, load_alerts, recipients
from sinks.webhooks.store import Store
from streams import topics
from streams.core.definitions import Definitions
from streams.definitions_file import load_definitions

alerts_app = typer.Typer(
    help="Alert webhooks: run the notifier (no subcommand), or test, status, replay.",
    invoke_without_command=True,
)
app.add_typer(alerts_app, name="alerts")
DEFAULT_GROUP = "leadflow-alerts"


def _store_path(settings: Settings, group: str) -> Path:
    return settings.state_dir / "alerts" / f"{group}.sqlite"


def _load(settings: Settings) -> tuple[Definitions, AlertsConfig, dict[str, Endpoint]]:
    defs = load_definitions(settings.definitions)
    config = load_alerts(defs)
    return defs, config, resolve_endpoints(config, os.environ)


@alerts_app.callback()
def alerts(
    ctx: typer.Context,
    group: str = typer.Option(DEFAULT_GROUP, "--group", help="Consumer group (and store name)"),
    topic: str = typer.Option(topics.SLA, "--topic", help="SLA records topic"),
    clickhouse: bool = typer.Option(
        True, "--clickhouse/--no-clickhouse", help="Write given-up deliveries to alert_deliveries"
    ),
) -> None:
    """Run the notifier until SIGINT/SIGTERM (metrics on LEADFLOW_ALERTS_METRICS_PORT)."""
    ctx.obj = {"group": group}
    if ctx.invoked_subcommand is not None:
        return
    from prometheus_client import start_http_server

    from sinks.clickhouse.backend import Backend
    from sinks.clickhouse.sink import make_consumer
    from sinks.webhooks.formats import Renderer
    from sinks.webhooks.notifier import Notifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines carry full URLs
    settings = build_settings()
    defs, config, endpoints = _load(settings)
    backend: Backend | None = None
    if clickhouse:
        from leadflow.commands.db import backend_for
        from sinks.clickhouse.migrate import migrate

        backend = backend_for(settings)
        migrate(backend)
    if settings.alerts_metrics_port:
        start_http_server(settings.alerts_metrics_port, addr=settings.host)
    store = Store(_store_path(settings, group))
    names = ", ".join(f"{e.name} ({e.spec.format}, {e.label})" for e in endpoints.values())
    logging.getLogger("leadflow.alerts").info("endpoints: %s", names or "none")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        consumer = make_consumer(settings.bootstrap, [topic], group)
        await consumer.start()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        try:
            async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:
                notifier = Notifier(
                    defs,
                    config,
                    endpoints,
                    store,
                    Renderer(defs, settings.dashboard_url),
                    client,
                    backend,
                )
                await notifier.run(consumer, stop)
        finally:
            await consumer.stop()
            store.close()

    asyncio.run(main())


@alerts_app.command("test")
def alerts_test(
    endpoint: str = typer.Option(..., "--endpoint", help="Name of a configured endpoint"),
) -> None:
    """Send a sample breach alert to one endpoint and print the response."""
    from sinks.webhooks.formats import Alert, Renderer
    from sinks.webhooks.notifier import post_once

    settings = build_settings()
    defs = load_definitions(settings.definitions)
    config = load_alerts(defs)
    if endpoint not in config.endpoints:
        raise LeadflowError(
            f"--endpoint: unknown endpoint {endpoint!r}; one of {sorted(config.endpoints)}"
        )
    target = resolve_endpoints(
        AlertsConfig(
            {endpoint: config.endpoints[endpoint]},
            {},
            {},
            config.routes,
            {},
            config.marketing_owner,
        ),
        os.environ,
    )[endpoint]
    rep = next((p for p in defs.people.values() if p.role == "rep"), None)
    now = time.time()
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 1800))
    policy = defs.sla_policies[0].name if defs.sla_policies else "sample"
    record = {
        "record_id": f"sample-{int(now)}",
        "instance_id": "sample",
        "lead_id": "lead-sample",
        "policy": policy,
        "event": "breached",
        "status": "breached",
        "due_at": due,
        "at": at,
        "owner_id": rep.id if rep else None,
        "team_id": rep.team_id if rep else None,
        "escalate_to": None,
        "definitions_version": defs.version,
    }
    who = recipients(Kind.BREACHED, record, config, defs).get(endpoint, ())
    message_id = f"msg_test_{int(now)}"
    alert = Alert(message_id, Kind.BREACHED, endpoint, record, who)
    body = Renderer(defs, settings.dashboard_url).body(target.spec.format, message_id, [alert])

    async def send() -> tuple[int | None, str]:
        async with httpx.AsyncClient() as client:
            return await post_once(client, target, message_id, body, now)

    code, text = asyncio.run(send())
    typer.echo(
        f"endpoint {endpoint} ({target.spec.format}, {target.label}): webhook-id {message_id}"
    )
    typer.echo(f"response: {code if code is not None else 'none'} {text}")
    if code is None or not 200 <= code < 300:
        raise typer.Exit(1)


@alerts_app.command("status")
def alerts_status(ctx: typer.Context) -> None:
    """List endpoints, pending alerts and retries, disabled endpoints (from the local store)."""
    settings = build_settings()
    defs = load_definitions(settings.definitions)
    config = load_alerts(defs)
    path = _store_path(settings, ctx.obj["group"])
    store = Store(path)
    try:
        counts = store.counts()
        disabled = store.disabled()
        unreported = len(store.unreported())
    finally:
        store.close()
    table = Table(title=f"alert endpoints ({path})")
    for column in (
        "endpoint",
        "format",
        "url from",
        "state",
        "pending alerts",
        "pending retries",
        "sent",
        "suppressed",
        "given up",
    ):
        table.add_column(column)
    for name, spec in config.endpoints.items():
        c = counts.get(name, {})
        state = f"DISABLED: {disabled[name][1]}" if name in disabled else "enabled"
        given_up = sum(c.get(f"alerts_{s}", 0) for s in ("failed", "exhausted", "disabled"))
        table.add_row(
            name,
            spec.format,
            f"${spec.url_env}" if spec.url_env else "definitions",
            state,
            str(c.get("alerts_pending", 0) + c.get("alerts_queued", 0)),
            str(c.get("pending_retries", 0)),
            str(c.get("alerts_sent", 0)),
            str(c.get("alerts_suppressed", 0)),
            str(given_up),
        )
    Console().print(table)
    typer.echo(f"given-up messages not yet written to ClickHouse: {unreported}")


@alerts_app.command("replay")
def alerts_replay(
    ctx: typer.Context,
    endpoint: str | None = typer.Option(None, "--endpoint", help="Only this endpoint's messages"),
) -> None:
    """Re-send the messages alert_deliveries holds as not delivered (same webhook-id)."""
    from leadflow.commands.db import backend_for
    from sinks.clickhouse.migrate import migrate
    from sinks.webhooks.notifier import replay_failed

    settings = build_settings()
    _, _, endpoints = _load(settings)
    backend = backend_for(settings)
    migrate(backend)
    store = Store(_store_path(settings, ctx.obj["group"]))

    async def run() -> list[tuple[str, str, int | None, str]]:
        async with httpx.AsyncClient() as client:
            return await replay_failed(backend, store, endpoints, client, endpoint)

    try:
        results = asyncio.run(run())
    finally:
        store.close()
    for message_id, name, _code, outcome in results:
        typer.echo(f"{name} {message_id}: {outcome}")
    typer.echo(f"replayed {len(results)} message(s)")
