"""The `leadflow` console command: one typer app; each command group lives in leadflow/commands/."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from leadflow.settings import Settings
from schemas.errors import LeadflowError

app = typer.Typer(
    name="leadflow",
    help="Event-driven lead lifecycle pipeline: stages, SLAs and attribution shared by marketing and sales.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def build_settings(**overrides: object) -> Settings:
    """The one Settings object: env (LEADFLOW_*) overridden by the flags that were given."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LeadflowError(f"invalid setting {where}: {first['msg']}") from None


def _register_commands() -> None:
    # Each module adds its commands to `app`; one import line per module.
    from leadflow.commands import (  # noqa: F401
        alerts,
        db,
        demo,
        generate,
        produce,
        replay,
        sink,
        stack,
        topics,
        worker,
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
