"""docker-compose.yml is correct on paper: files exist, env names and ports match the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from leadflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
FIELDS = {f"LEADFLOW_{name.upper()}" for name in Settings.model_fields}


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return (
        {k: str(v) for k, v in env.items()}
        if isinstance(env, dict)
        else dict(e.split("=", 1) for e in env)
    )


def test_every_referenced_file_exists() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            if host.startswith("."):
                assert (ROOT / host).exists(), f"{name}: {host} is missing"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), (
                f"{name}: Dockerfile missing"
            )


def test_leadflow_env_names_are_real_settings() -> None:
    for name, service in SERVICES.items():
        for key in _env(service):
            if key.startswith("LEADFLOW_"):
                assert key in FIELDS, (
                    f"{name}: {key} is not a leadflow setting (leadflow/settings.py)"
                )


def test_ports_agree_with_the_settings() -> None:
    kafka_ports = {p.split(":")[1] for p in SERVICES["kafka"]["ports"]}
    clickhouse_ports = {p.split(":")[1] for p in SERVICES["clickhouse"]["ports"]}
    for name in ("worker", "sink", "topics"):
        env = _env(SERVICES[name])
        host, port = env["LEADFLOW_KAFKA_BOOTSTRAP"].split(":")
        assert host == "kafka" and port in kafka_ports, name
        if "LEADFLOW_CLICKHOUSE_PORT" in env:
            assert env["LEADFLOW_CLICKHOUSE_PORT"] in clickhouse_ports
            assert env["LEADFLOW_CLICKHOUSE_HTTP_PORT"] in clickhouse_ports
        served = {"worker": "LEADFLOW_WORKER_METRICS_PORT", "sink": "LEADFLOW_METRICS_PORT"}
        if name in served:  # each publishes the /metrics port it serves
            port = env[served[name]]
            assert any(p.endswith(f":{port}") for p in SERVICES[name]["ports"]), name
        Settings(
            **{
                k.removeprefix("LEADFLOW_").lower(): v
                for k, v in env.items()
                if k.startswith("LEADFLOW_") and "${" not in v
            }
        )
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert targets == {"worker:9364", "sink:9363"}


def test_grafana_datasource_uses_the_read_only_user() -> None:
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text()
    )
    data = source["datasources"][0]
    assert data["jsonData"]["username"] == "grafana"
    assert data["secureJsonData"]["password"].startswith("$")
