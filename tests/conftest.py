"""Shared fixtures: the embedded stack once per session, unique topics and databases per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leadflow.settings import Settings
from leadflow.stack import EmbeddedStack, private_stack

# Faust/aiokafka consumer settings that make a group join in seconds on Tansu (INFRA.md).
CONSUMER_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running embedded stack: the one at the configured ports if it answers
    (CI starts it with `leadflow stack up`), else a private one on free ports."""
    configured = Settings()
    if EmbeddedStack(configured).healthy():
        yield configured
        return
    with private_stack(tmp_path_factory.mktemp("stack")) as private:
        yield private.settings


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Settings) -> str:
    """host:port of the embedded broker."""
    return stack.bootstrap


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of names unique to this test (topics, groups, databases)."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def clickhouse(stack: Settings, unique_name: Callable[[str], str]) -> Iterator[object]:
    """A clickhouse_driver Client on a fresh database, dropped afterwards."""
    from clickhouse_driver import Client

    database = unique_name("db").replace("-", "_")
    admin = Client(host=stack.clickhouse_host, port=stack.clickhouse_port)
    admin.execute(f"CREATE DATABASE {database}")
    client = Client(host=stack.clickhouse_host, port=stack.clickhouse_port, database=database)
    try:
        yield client
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture(scope="session")
def generated_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset (300 leads, with bad lines) shared by tests."""
    from datetime import date

    from streams.definitions_file import load_definitions
    from streams.generate import generate

    path = tmp_path_factory.mktemp("data") / "events.jsonl"
    with open(path, "wb") as out:
        generate(
            load_definitions(),
            out,
            leads=300,
            days=60,
            seed=11,
            start=date(2026, 1, 5),
            bad_fraction=0.01,
        )
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests (they use the `stack` fixture) get the `integration` marker."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


os.environ.setdefault("HYPOTHESIS_PROFILE", "default")
