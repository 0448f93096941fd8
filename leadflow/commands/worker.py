"""`leadflow worker`: the Faust streaming pipeline (the same core as `leadflow replay`)."""

from __future__ import annotations

import sys

import typer

from leadflow.cli import app, build_settings
from leadflow.kafka_admin import create_topics
from streams.definitions_file import load_definitions
from streams.topics import input_formats


@app.command()
def worker(
    clock: str = typer.Option(
        "live", "--clock", help="live (wall clock drives SLA timers) or event (backfill)"
    ),
    input_format: str | None = typer.Option(
        None,
        "--input-format",
        help="avro or json for every input topic, or per topic: avro,touches=json "
        "[env LEADFLOW_INPUT_FORMAT]",
    ),
    store: str = typer.Option(
        "memory://", "--store", help="Table store: memory:// or rocksdb:// (durable)"
    ),
    fetch_wait_ms: int = typer.Option(
        20, "--fetch-wait-ms", min=1, help="Consumer fetch wait (Faust hard-codes 1500)"
    ),
    app_id: str = typer.Option("leadflow", "--app-id", help="Consumer group / changelog prefix"),
    topic_prefix: str = typer.Option("", "--topic-prefix", help="Prefix for every topic (tests)"),
    log_level: str = typer.Option("warn", "--log-level", help="crit, error, warn, info or debug"),
    instance_id: str | None = typer.Option(
        None,
        "--instance-id",
        envvar="LEADFLOW_WORKER_INSTANCE_ID",
        help="Static group membership: a stable id, unique per running worker; a restart with "
        "it resumes without waiting for the old session to expire",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        help="Serve Prometheus /metrics here, 0: not at all [env LEADFLOW_WORKER_METRICS_PORT, "
        "default 9364]",
    ),
    exact_end_offsets: bool = typer.Option(
        True,
        "--exact-end-offsets/--reported-end-offsets",
        help="Correct Tansu's end offsets at table recovery (default; harmless on Kafka)",
    ),
) -> None:
    """Consume the input topics, keep lead state in tables, write outputs, fire SLA timers."""
    from schemas.errors import LeadflowError
    from streams.app import WorkerConfig, create_app

    if clock not in ("live", "event"):
        raise LeadflowError(f"--clock: {clock!r} is not live or event")
    settings = build_settings(input_format=input_format, worker_metrics_port=metrics_port)
    try:
        formats = input_formats(settings.input_format)
    except ValueError as exc:
        raise LeadflowError(f"--input-format {exc}") from None
    defs = load_definitions(settings.definitions)
    create_topics(settings.bootstrap, settings.partitions, topic_prefix)
    config = WorkerConfig(
        bootstrap=settings.bootstrap,
        partitions=settings.partitions,
        clock=clock,  # type: ignore[arg-type]
        input_formats=formats,
        store=store,
        fetch_max_wait_ms=fetch_wait_ms,
        app_id=app_id,
        topic_prefix=topic_prefix,
        exact_end_offsets=exact_end_offsets,
        instance_id=instance_id,
        data_dir=str((settings.state_dir / "worker" / app_id).resolve()),
    )
    (settings.state_dir / "worker" / app_id).mkdir(parents=True, exist_ok=True)
    faust_app = create_app(config, defs)
    _serve_metrics(settings.host, settings.worker_metrics_port)
    sys.argv = [sys.argv[0], "worker", "--loglevel", log_level, "--without-web"]
    faust_app.main()


def _serve_metrics(host: str, port: int) -> None:
    """Prometheus /metrics on `port` (0: off); a port in use costs the metrics, not the worker."""
    if not port:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        print(f"leadflow worker: metrics not served on {host}:{port}: {exc}", file=sys.stderr)
