"""Numbered SQL migrations: applied in order, recorded with a checksum, never silently changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import LeadflowError
from sinks.clickhouse.backend import Backend
from sinks.clickhouse.tables import MIGRATIONS

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class MigrationError(LeadflowError):
    """A migration could not be applied, or an applied one was changed."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements (split on `;`, comments dropped)."""
        lines = [line for line in self.sql.splitlines() if not line.strip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every NNN_*.sql file in order."""
    files = sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))
    return [Migration(f.name, f.read_text()) for f in files]


def migrate(backend: Backend, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is not applied yet; returns the names applied now.

    Raises MigrationError when an applied file's checksum differs from the recorded one.
    """
    backend.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS} (name String, checksum String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree() ORDER BY name"
    )
    applied = dict(backend.execute(f"SELECT name, checksum FROM {MIGRATIONS}"))  # type: ignore[arg-type]
    done = []
    for migration in migrations(directory):
        recorded = applied.get(migration.name)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} was changed after it was applied; "
                    "never edit an applied migration — add a new numbered file instead"
                )
            continue
        for statement in migration.statements():
            backend.execute(statement)
        backend.insert(MIGRATIONS, ("name", "checksum"), [(migration.name, migration.checksum)])
        done.append(migration.name)
    return done
