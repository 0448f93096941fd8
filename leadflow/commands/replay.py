"""`leadflow replay`: the offline driver of the core (DESIGN.md §6)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from leadflow.cli import app, build_settings
from schemas.errors import LeadflowError
from streams.core.errors import InvalidEvent
from streams.core.events import parse_time
from streams.definitions_file import load_definitions
from streams.replay import replay_file, summary


@app.command()
def replay(
    input: Path = typer.Option(..., "--input", help="Events, one JSON object per line"),
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the JSON Lines results go"),
    definitions: Path | None = typer.Option(
        None, "--definitions", help="Definitions YAML [env LEADFLOW_DEFINITIONS]"
    ),
    until: str | None = typer.Option(
        None, "--until", help="Advance the event-time clock to this ISO time at the end"
    ),
) -> None:
    """Apply events in file order to the core and write transitions, SLAs, attribution, states."""
    settings = build_settings(definitions=definitions)
    defs = load_definitions(settings.definitions)
    try:
        until_at = parse_time(until, "--until") if until else None
    except InvalidEvent as exc:
        raise LeadflowError(str(exc)) from None
    if not input.is_file():
        raise LeadflowError(f"cannot read input file {input}: no such file")
    try:
        stats = replay_file(input, output_dir, defs, until_at)
    except OSError as exc:
        raise LeadflowError(f"replay failed: {exc.strerror or exc} ({exc.filename})") from None
    table = Table("replay", "value", title=f"definitions {defs.version}")
    for key, value in summary(stats).items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console(stderr=True).print(table)
    typer.echo(
        f"wrote {', '.join(sorted(p.name for p in output_dir.glob('*.jsonl')))} to {output_dir}"
    )
