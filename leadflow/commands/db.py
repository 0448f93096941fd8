"""`leadflow db migrate | load`, `leadflow dashboards build` and `leadflow report`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from clickhouse_driver.errors import ServerException
from rich.console import Console
from rich.table import Table

from leadflow.cli import app, build_settings
from leadflow.settings import Settings
from schemas.errors import LeadflowError
from sinks.clickhouse.backend import NETWORK_ERRORS, ServerBackend
from sinks.clickhouse.dashboards import build
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.report import collect, render_html
from sinks.clickhouse.writer import load_replay_output

db_app = typer.Typer(help="ClickHouse schema and data.", no_args_is_help=True)
app.add_typer(db_app, name="db")
dash_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
app.add_typer(dash_app, name="dashboards")


def backend_for(settings: Settings) -> ServerBackend:
    """The writer connection to the configured ClickHouse, its database created if missing."""
    backend = ServerBackend(
        settings.clickhouse_host,
        settings.clickhouse_port,
        settings.clickhouse_database,
        settings.clickhouse_user,
        settings.clickhouse_password.get_secret_value(),
    )
    backend.create_database()
    return backend


def _guard(action: str) -> None:
    raise LeadflowError(f"{action}: ClickHouse went away; check `leadflow stack status`")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the numbered migrations that are not applied yet (idempotent)."""
    backend = backend_for(build_settings())
    try:
        applied = migrate(backend)
    except NETWORK_ERRORS:
        _guard("migrate")
    typer.echo("applied " + ", ".join(applied) if applied else "schema is up to date")


@db_app.command("load")
def db_load(
    replay_dir: Path = typer.Option(
        ..., "--replay-dir", help="Output directory of `leadflow replay`"
    ),
    events: Path | None = typer.Option(
        None, "--events", help="The replayed input (fills events_raw)"
    ),
) -> None:
    """Load a replay's results into ClickHouse (re-loading the same files changes no KPI)."""
    if not replay_dir.is_dir():
        raise LeadflowError(f"--replay-dir: {replay_dir} is not a directory")
    backend = backend_for(build_settings())
    migrate(backend)
    started = time.perf_counter()
    counts = load_replay_output(backend, replay_dir, events)
    total = sum(counts.values())
    typer.echo(f"loaded {total:,} rows in {time.perf_counter() - started:.1f} s: {counts}")


@dash_app.command("build")
def dashboards_build() -> None:
    """Write deploy/grafana/dashboards/*.json from sinks/clickhouse/dashboards.py."""
    for path in build():
        typer.echo(f"wrote {path}")


@app.command()
def report(
    html: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML page here"),
) -> None:
    """The key KPIs from ClickHouse: terminal tables, or a static HTML page with charts."""
    backend = backend_for(build_settings())
    try:
        migrate(backend)
        sections = collect(backend)
    except NETWORK_ERRORS:
        _guard("report")
    except ServerException as exc:
        raise LeadflowError(
            f"report: ClickHouse refused a query: {str(exc).splitlines()[0]}"
        ) from None
    if html is not None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        html.write_text(render_html(sections, generated_at=stamp), encoding="utf-8")
        typer.echo(f"wrote {html}")
        return
    console = Console()
    for section in sections:
        table = Table(*section.columns, title=section.title)
        for row in section.rows[:15]:
            table.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)
