"""`leadflow topics create`: every topic from streams/topics.py, idempotently."""

from __future__ import annotations

import typer

from leadflow.cli import app, build_settings
from leadflow.kafka_admin import create_topics

topics_app = typer.Typer(help="Manage leadflow's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def create(
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="host:port [env LEADFLOW_KAFKA_BOOTSTRAP]"
    ),
    partitions: int | None = typer.Option(
        None,
        "--partitions",
        help="partitions of lead-keyed topics [env LEADFLOW_PARTITIONS, default 4]",
    ),
) -> None:
    """Create input, output, dead-letter and internal topics (existing ones are left alone)."""
    settings = build_settings(kafka_bootstrap=bootstrap, partitions=partitions)
    created, existing = create_topics(settings.bootstrap, settings.partitions)
    for name in created:
        typer.echo(f"created  {name}")
    for name in existing:
        typer.echo(f"exists   {name}")
