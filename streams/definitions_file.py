"""Reading the definitions YAML file: I/O, parsing and the `holidays` library stay out of the core."""

from __future__ import annotations

from pathlib import Path

import yaml

from streams.core.definitions import DEFAULT_PATH, Definitions, definitions_from_mapping
from streams.core.errors import DefinitionsError
from streams.holidays_source import LibraryHolidays

PUBLIC_HOLIDAYS = LibraryHolidays()


def load_definitions(path: str | Path | None = None) -> Definitions:
    """Load and validate a definitions YAML file (None → the packaged default)."""
    source = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionsError(f"cannot read definitions file {source}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionsError(f"{source}: not valid YAML ({exc.__class__.__name__})") from None
    return definitions_from_mapping(data, source=str(source), public_holidays=PUBLIC_HOLIDAYS)
