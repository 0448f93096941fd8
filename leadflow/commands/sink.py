"""`leadflow sink`: output topics → ClickHouse, batched, idempotent, with backpressure."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer
from prometheus_client import start_http_server

from leadflow.cli import app, build_settings
from leadflow.commands.db import backend_for
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.sink import TABLE_OF_TOPIC, ClickHouseSink, SinkConfig, make_consumer


@app.command()
def sink(
    group: str = typer.Option(
        "leadflow-clickhouse-sink", "--group", help="Consumer group of the sink"
    ),
    batch_rows: int = typer.Option(
        50_000, "--batch-rows", min=1, help="Insert when this many rows are buffered"
    ),
    linger_s: float = typer.Option(
        1.0, "--linger-s", min=0.01, help="...or when this much time has passed"
    ),
) -> None:
    """Run the ClickHouse sink until SIGINT/SIGTERM (metrics on LEADFLOW_METRICS_PORT)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = build_settings()
    backend = backend_for(settings)
    migrate(backend)
    start_http_server(settings.metrics_port, addr=settings.host)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        consumer = make_consumer(settings.bootstrap, list(TABLE_OF_TOPIC), group)
        await consumer.start()
        try:
            await ClickHouseSink(
                backend, consumer, TABLE_OF_TOPIC, SinkConfig(batch_rows, linger_s)
            ).run(stop)
        finally:
            await consumer.stop()

    asyncio.run(main())
