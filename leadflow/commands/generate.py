"""`leadflow generate`: a realistic, reproducible JSON Lines event stream."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import typer

from leadflow.cli import app, build_settings
from schemas.errors import LeadflowError
from streams.definitions_file import load_definitions
from streams.generate import generate as generate_stream


@app.command()
def generate(
    leads: int = typer.Option(1000, "--leads", min=1, help="Number of leads"),
    days: int = typer.Option(90, "--days", min=1, help="Days over which leads arrive"),
    seed: int = typer.Option(42, "--seed", help="Same seed, same bytes"),
    bad_fraction: float = typer.Option(
        0.0, "--bad-fraction", min=0.0, max=0.5, help="Share of broken lines mixed in"
    ),
    output: str = typer.Option("-", "--output", "-o", help="File to write, or - for stdout"),
    start: str = typer.Option("2026-01-05", "--start", help="First day (YYYY-MM-DD)"),
    definitions: Path | None = typer.Option(
        None, "--definitions", help="Definitions YAML (teams, reps)"
    ),
) -> None:
    """Write a B2B funnel's events (touches, leads, sales activities, deals) as JSON Lines."""
    settings = build_settings(definitions=definitions)
    defs = load_definitions(settings.definitions)
    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        raise LeadflowError(f"--start: {start!r} is not a date (YYYY-MM-DD)") from None
    try:
        if output == "-":
            stats = generate_stream(
                defs, sys.stdout.buffer, leads, days, seed, first_day, bad_fraction
            )
        else:
            with open(output, "wb") as handle:
                stats = generate_stream(defs, handle, leads, days, seed, first_day, bad_fraction)
    except OSError as exc:
        raise LeadflowError(f"cannot write {output}: {exc.strerror}") from None
    typer.echo(
        f"generated {stats.lines:,} lines ({stats.events:,} events, {stats.duplicates:,} duplicates, "
        f"{stats.bad_lines:,} bad) for {stats.leads:,} leads",
        err=True,
    )
