"""ClickHouse: migrations on 18.16 and chdb, idempotent loads, dashboards' SQL, security, erasure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from leadflow.settings import Settings
from sinks.clickhouse import tables
from sinks.clickhouse.backend import Backend, ChdbBackend, ServerBackend
from sinks.clickhouse.dashboards import (
    DASHBOARD_DIR,
    panel_checks,
    panels_from_files,
    render,
    substitute_macros,
)
from sinks.clickhouse.migrate import MIGRATIONS_DIR, MigrationError, migrate, migrations
from sinks.clickhouse.rows import COLUMNS
from sinks.clickhouse.writer import erase_leads, load_replay_output

PANELS = panels_from_files()
EVERYTHING = (0, 4102444800)


def _ddl_columns(backend: Backend, table: str) -> list[str]:
    return [row[0] for row in backend.execute(f"DESCRIBE TABLE {table}")]


def test_migrations_apply_on_18_16_and_are_idempotent(server: ServerBackend) -> None:
    assert migrate(server) == [m.name for m in migrations()]
    assert migrate(server) == []
    assert {r[0] for r in server.execute("SHOW TABLES")} >= {
        *tables.TABLE_OF_KIND.values(),
        tables.ALERT_DELIVERIES,
    }


def test_migrations_apply_on_the_current_engine(chdb_loaded: ChdbBackend) -> None:
    assert {r[0] for r in chdb_loaded.execute("SHOW TABLES")} >= {
        *tables.TABLE_OF_KIND.values(),
        tables.ALERT_DELIVERIES,
    }


def test_a_changed_applied_migration_is_refused(server: ServerBackend, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(server, copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate(server, copy)


def test_row_mapper_columns_match_the_ddl(server: ServerBackend) -> None:
    migrate(server)
    for table, columns in COLUMNS.items():
        ddl = [c for c in _ddl_columns(server, table) if c != "inserted_at"]
        assert list(columns) == ddl, (
            f"{table}: sinks/clickhouse/rows.py COLUMNS differ from the DDL; add a migration "
            "(ALTER TABLE ... ADD COLUMN) and update COLUMNS in the same order"
        )


def _kpis(backend: Backend) -> list[Any]:
    return [sorted(backend.execute(substitute_macros(sql, *EVERYTHING))) for _, _, sql in PANELS]


def test_loading_the_same_batch_twice_gives_the_same_kpis(
    server: ServerBackend, replay_dir: Path, generated_events: Path
) -> None:
    migrate(server)
    load_replay_output(server, replay_dir, generated_events)
    once = _kpis(server)
    load_replay_output(server, replay_dir, generated_events)
    assert _kpis(server) == once


@pytest.fixture
def server_loaded(server: ServerBackend, replay_dir: Path, generated_events: Path) -> ServerBackend:
    migrate(server)
    load_replay_output(server, replay_dir, generated_events)
    return server


def _check_panel(title: str, backend: Backend, sql: str) -> None:
    try:
        names, rows = backend.query(substitute_macros(sql, *EVERYTHING))
    except Exception as exc:  # noqa: BLE001 — the point is to name the broken panel
        pytest.fail(f"panel {title!r}: query failed: {str(exc)[:300]}")
    assert rows, f"panel {title!r} returned no rows"
    check = panel_checks()[title]
    for column in check.ratio_columns:
        index = names.index(column)
        assert all(0.0 <= float(row[index]) <= 1.0 for row in rows), (
            f"panel {title!r}: {column} outside 0..1"
        )
    for column in check.zero_columns:
        index = names.index(column)
        assert all(row[index] == 0 for row in rows), f"panel {title!r}: {column} must be 0"


@pytest.mark.parametrize(
    ("dashboard", "title", "sql"), PANELS, ids=[f"{d}:{t}" for d, t, _ in PANELS]
)
def test_every_panel_runs_on_18_16(
    server_loaded: ServerBackend, dashboard: str, title: str, sql: str
) -> None:
    _check_panel(title, server_loaded, sql)


@pytest.mark.parametrize(
    ("dashboard", "title", "sql"), PANELS, ids=[f"{d}:{t}" for d, t, _ in PANELS]
)
def test_every_panel_runs_on_the_current_engine(
    chdb_loaded: ChdbBackend, dashboard: str, title: str, sql: str
) -> None:
    _check_panel(title, chdb_loaded, sql)


def test_a_broken_panel_fails_with_its_title(chdb_loaded: ChdbBackend) -> None:
    with pytest.raises(pytest.fail.Exception, match="'Broken panel'"):
        _check_panel(
            "Broken panel",
            chdb_loaded,
            "SELECT toStartOfInterval(now(), INTERVAL 1 hour) FROM nope",
        )


def test_committed_dashboards_match_the_code() -> None:
    import json

    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        assert json.loads(path.read_text()) == render(path.stem), (
            f"{path.name} differs from sinks/clickhouse/dashboards.py; run `leadflow dashboards build`"
        )


def test_grafana_user_can_read_but_not_write(stack: Settings, server_loaded: ServerBackend) -> None:
    grafana = Client(
        host=stack.clickhouse_host,
        port=stack.clickhouse_port,
        user="grafana",
        password="grafana",
        database=server_loaded.database,
    )
    assert grafana.execute("SELECT count() FROM lead_state")[0][0] > 0
    for statement in (
        "INSERT INTO lead_state (lead_id) VALUES ('x')",
        "ALTER TABLE lead_state DELETE WHERE 1",
        "DROP TABLE lead_state",
        "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    ):
        with pytest.raises(ServerException) as err:
            grafana.execute(statement)
        assert err.value.code == 164, statement  # READONLY
    assert grafana.execute("SELECT 1", settings={"max_execution_time": 5}) == [(1,)]  # readonly=2


def test_erasure_removes_every_row_with_personal_data(server_loaded: ServerBackend) -> None:
    victim = server_loaded.execute(
        "SELECT lead_id FROM events_raw WHERE event_type = 'lead_created' AND payload LIKE '%@example.com%' LIMIT 1"
    )[0][0]
    email = f"{victim}@example.com"
    erase_leads(server_loaded, [victim])
    import time

    # mutations take ~2 s, much longer on a loaded machine, and may show in system.mutations
    # only after the ALTER returned: wait for what they do, not for their bookkeeping
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = sum(
            server_loaded.execute(
                f"SELECT count() FROM {table} WHERE lead_id = %(id)s", {"id": victim}
            )[0][0]
            for table in tables.PERSONAL_DATA_TABLES
        )
        if not left:
            break
        time.sleep(0.2)
    for table in tables.PERSONAL_DATA_TABLES:
        assert server_loaded.execute(
            f"SELECT count() FROM {table} WHERE lead_id = %(id)s", {"id": victim}
        ) == [(0,)]
    hits = server_loaded.execute(
        "SELECT count() FROM events_raw WHERE position(payload, %(e)s) > 0", {"e": email}
    )
    assert hits == [(0,)]
    # anonymous aggregates stay: the lead's funnel history is still counted
    assert (
        server_loaded.execute(
            "SELECT count() FROM transitions WHERE lead_id = %(id)s", {"id": victim}
        )[0][0]
        > 0
    )
