"""Fixtures of the ClickHouse tests: a replayed dataset, loaded into chdb once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client

from leadflow.settings import Settings
from sinks.clickhouse.backend import ChdbBackend, ServerBackend
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.writer import load_replay_output
from streams.definitions_file import load_definitions
from streams.replay import replay_file


@pytest.fixture(scope="session")
def replay_dir(generated_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    replay_file(generated_events, out, load_definitions(), until=None)
    return out


@pytest.fixture
def server(stack: Settings, unique_name: Callable[[str], str]) -> Iterator[ServerBackend]:
    backend = ServerBackend(
        stack.clickhouse_host, stack.clickhouse_port, unique_name("db").replace("-", "_")
    )
    backend.create_database()
    yield backend
    Client(host=stack.clickhouse_host, port=stack.clickhouse_port).execute(
        f"DROP DATABASE IF EXISTS {backend.database}"
    )


@pytest.fixture(scope="session")
def chdb_loaded(
    replay_dir: Path, generated_events: Path, tmp_path_factory: pytest.TempPathFactory
) -> ChdbBackend:
    backend = ChdbBackend(str(tmp_path_factory.mktemp("chdb")), "leadflow")
    backend.create_database()
    migrate(backend)
    load_replay_output(backend, replay_dir, generated_events)
    return backend


@pytest.fixture
def server_backend(stack: Settings, unique_name: Callable[[str], str]) -> Iterator[ServerBackend]:
    """A migrated, empty database on the shared server, dropped afterwards."""
    backend = ServerBackend(
        stack.clickhouse_host, stack.clickhouse_port, unique_name("db").replace("-", "_")
    )
    backend.create_database()
    migrate(backend)
    yield backend
    Client(host=stack.clickhouse_host, port=stack.clickhouse_port).execute(
        f"DROP DATABASE IF EXISTS {backend.database}"
    )
