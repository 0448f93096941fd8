"""`leadflow produce`: validate a JSON Lines file and publish it to the input topics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn

from leadflow.cli import app, build_settings
from leadflow.producer import produce_file
from schemas.errors import LeadflowError


@app.command()
def produce(
    input: Path = typer.Option(..., "--input", help="Events, one JSON object per line"),
    format: str = typer.Option("avro", "--format", help="avro (Confluent wire format) or json"),
    rate: float | None = typer.Option(
        None, "--rate", min=1, help="Events per second (default: as fast as possible)"
    ),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="host:port [env LEADFLOW_KAFKA_BOOTSTRAP]"
    ),
) -> None:
    """Publish each valid line to its topic keyed by lead_id (anonymous_id when there is none)."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if format not in ("avro", "json"):
        raise LeadflowError(f"--format: {format!r} is not avro or json")
    settings = build_settings(kafka_bootstrap=bootstrap)
    if not input.is_file():
        raise LeadflowError(f"cannot read input file {input}: no such file")
    total = sum(1 for _ in open(input, "rb"))
    with Progress(
        TextColumn("producing"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        transient=True,
        disable=total < 10_000,
    ) as bar:
        task = bar.add_task("produce", total=total)
        report = asyncio.run(
            produce_file(
                input,
                settings.bootstrap,
                format,
                rate,  # type: ignore[arg-type]
                progress=lambda n: bar.update(task, completed=n),
            )
        )
    for line_no, reason in report.rejected[:50]:
        typer.echo(f"line {line_no}: {reason}", err=True)
    if len(report.rejected) > 50:
        typer.echo(f"... and {len(report.rejected) - 50} more rejected lines", err=True)
    rate_s = report.sent / report.elapsed_s if report.elapsed_s else 0
    typer.echo(
        f"sent {report.sent:,}, rejected {len(report.rejected):,} in {report.elapsed_s:.2f} s ({rate_s:,.0f}/s)"
    )
