"""The `leadflow` console command: one typer app; each command group lives in leadflow/commands/."""

from __future__ import annotations

import sys

import typer

from schemas.errors import LeadflowError

app = typer.Typer(
    name="leadflow",
    help="Event-driven lead lifecycle pipeline: stages, SLAs and attribution shared by marketing and sales.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    # Each module adds its commands to `app`; one import line per module.
    from leadflow.commands import (  # noqa: F401
        stack,
    )


def main() -> None:
    """Entry point: user mistakes become one readable line and a non-zero exit, never a traceback."""
    _register_commands()
    try:
        app()
    except LeadflowError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
