"""The one settings object (prefix LEADFLOW_), built once at the entry point and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of leadflow; env vars are `LEADFLOW_<FIELD>` (e.g. LEADFLOW_KAFKA_PORT)."""

    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", frozen=True, extra="ignore")

    state_dir: Path = Path(".leadflow")
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_bootstrap: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 9000
    clickhouse_http_port: int = 8123
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "leadflow"
    partitions: int = 4
    definitions: Path | None = None
    input_format: str = "avro"  # `avro`, `json`, or e.g. `avro,touches=json` (streams.topics)
    metrics_port: int = 9363  # the ClickHouse sink's /metrics
    worker_metrics_port: int = 9364  # the worker's /metrics (0: not served)
    alerts_metrics_port: int = 9365  # the alert notifier's /metrics (0: not served)
    dashboard_url: str = "http://127.0.0.1:3000"  # Grafana base URL in alert links

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers: the explicit override, else the embedded broker's address."""
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"
