"""`leadflow stack up | down | status`: the embedded Tansu + ClickHouse stack on loopback."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from leadflow.cli import app, build_settings
from leadflow.stack import EmbeddedStack

stack_app = typer.Typer(
    help="Run the embedded Kafka-protocol broker (Tansu) and ClickHouse.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")

StateDir = typer.Option(
    None,
    "--state-dir",
    help="Where data, logs and pid files live [env LEADFLOW_STATE_DIR, default .leadflow]",
)
KafkaPort = typer.Option(
    None, "--kafka-port", help="Tansu port [env LEADFLOW_KAFKA_PORT, default 9092]"
)
ChPort = typer.Option(
    None,
    "--clickhouse-port",
    help="ClickHouse native port [env LEADFLOW_CLICKHOUSE_PORT, default 9000]",
)
ChHttpPort = typer.Option(
    None,
    "--clickhouse-http-port",
    help="ClickHouse HTTP port [env LEADFLOW_CLICKHOUSE_HTTP_PORT, default 8123]",
)


def _stack(
    state_dir: Path | None, kafka_port: int | None, ch_port: int | None, ch_http: int | None
) -> EmbeddedStack:
    settings = build_settings(
        state_dir=state_dir,
        kafka_port=kafka_port,
        clickhouse_port=ch_port,
        clickhouse_http_port=ch_http,
    )
    return EmbeddedStack(settings, log=lambda m: typer.echo(m, err=True))


@stack_app.command("up")
def up(
    state_dir: Path | None = StateDir,
    kafka_port: int | None = KafkaPort,
    clickhouse_port: int | None = ChPort,
    clickhouse_http_port: int | None = ChHttpPort,
) -> None:
    """Start the stack (idempotent) and wait until Kafka metadata and ClickHouse answer."""
    stack = _stack(state_dir, kafka_port, clickhouse_port, clickhouse_http_port)
    took = stack.up()
    for row in stack.status():
        typer.echo(f"{row.name:14} {row.address:30} pid {row.pid}  {row.detail}")
    typer.echo(f"stack up in {took:.2f} s")


@stack_app.command("down")
def down(
    state_dir: Path | None = StateDir,
    kafka_port: int | None = KafkaPort,
    clickhouse_port: int | None = ChPort,
    clickhouse_http_port: int | None = ChHttpPort,
) -> None:
    """Stop only the servers this state dir started."""
    stopped = _stack(state_dir, kafka_port, clickhouse_port, clickhouse_http_port).down()
    typer.echo("stopped " + ", ".join(stopped) if stopped else "nothing to stop")


@stack_app.command("status")
def status(
    state_dir: Path | None = StateDir,
    kafka_port: int | None = KafkaPort,
    clickhouse_port: int | None = ChPort,
    clickhouse_http_port: int | None = ChHttpPort,
) -> None:
    """Print each component, its address, pid and health; exit 1 when something is down."""
    rows = _stack(state_dir, kafka_port, clickhouse_port, clickhouse_http_port).status()
    table = Table("component", "address", "pid", "health", "detail")
    for row in rows:
        table.add_row(
            row.name, row.address, str(row.pid or "-"), "ok" if row.healthy else "down", row.detail
        )
    Console().print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)
