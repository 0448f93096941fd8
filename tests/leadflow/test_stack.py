"""The embedded stack: up is idempotent, refuses ports it does not own, down stops only its own."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadflow.settings import Settings
from leadflow.stack import EmbeddedStack, PortTaken, clickhouse_ok, free_port, kafka_metadata_ok


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leadflow", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def private_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        state_dir=tmp_path / "state",
        kafka_port=free_port(),
        clickhouse_port=free_port(),
        clickhouse_http_port=free_port(),
    )
    yield settings
    EmbeddedStack(settings).down()


def _flags(s: Settings) -> list[str]:
    return [
        "--state-dir",
        str(s.state_dir),
        "--kafka-port",
        str(s.kafka_port),
        "--clickhouse-port",
        str(s.clickhouse_port),
        "--clickhouse-http-port",
        str(s.clickhouse_http_port),
    ]


@pytest.mark.integration
def test_up_status_idempotent_up_down_and_up_again(private_settings: Settings) -> None:
    up = _cli("stack", "up", *_flags(private_settings))
    assert up.returncode == 0, up.stderr
    assert "stack up in" in up.stdout
    assert kafka_metadata_ok("127.0.0.1", private_settings.kafka_port)
    assert clickhouse_ok("127.0.0.1", private_settings.clickhouse_http_port)
    again = _cli("stack", "up", *_flags(private_settings))
    assert again.returncode == 0 and "already running" in again.stderr
    status = _cli("stack", "status", *_flags(private_settings))
    assert status.returncode == 0 and "running" in status.stdout
    down = _cli("stack", "down", *_flags(private_settings))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not kafka_metadata_ok("127.0.0.1", private_settings.kafka_port)
    assert _cli("stack", "status", *_flags(private_settings)).returncode == 1
    # Tansu leaves its port in TIME_WAIT: `up` right after `down` must still come up (or wait)
    assert _cli("stack", "up", *_flags(private_settings)).returncode == 0
    assert kafka_metadata_ok("127.0.0.1", private_settings.kafka_port)


def test_up_refuses_a_port_held_by_someone_else(private_settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", private_settings.kafka_port))
        squatter.listen()
        with pytest.raises(PortTaken, match=str(private_settings.kafka_port)):
            EmbeddedStack(private_settings).up()
        result = _cli("stack", "up", *_flags(private_settings))
    assert result.returncode == 1
    assert f"port {private_settings.kafka_port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pid" in result.stderr  # names the owner: this test process


def test_down_with_nothing_started_stops_nothing(private_settings: Settings) -> None:
    result = _cli("stack", "down", *_flags(private_settings))
    assert result.returncode == 0 and "nothing to stop" in result.stdout
