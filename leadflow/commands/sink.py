"""`leadflow sink`: output topics → ClickHouse, batched, idempotent, with backpressure."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

import typer
from prometheus_client import start_http_server

from leadflow.cli import app, build_settings
from leadflow.commands.db import backend_for
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.sink import TABLE_OF_TOPIC, ClickHouseSink, SinkConfig, make_consumer
from streams.dataloss import BrokerProbe

# After SIGTERM/SIGINT the sink exits within this, whatever the broker and ClickHouse do: each
# step of a stop is bounded (SinkConfig), this is the last resort. Leaving then is what a kill
# does: nothing more is committed, the held rows are read again after a restart.
STOP_DEADLINE_S = 9.5


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
    topic_prefix: str = typer.Option("", "--topic-prefix", help="Prefix of every topic (tests)"),
) -> None:
    """Run the ClickHouse sink until SIGINT/SIGTERM (metrics on LEADFLOW_METRICS_PORT)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = build_settings()
    backend = backend_for(settings)
    migrate(backend)
    start_http_server(settings.metrics_port, addr=settings.host)

    table_of_topic = {topic_prefix + topic: table for topic, table in TABLE_OF_TOPIC.items()}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: _stopping(stop))
        consumer = make_consumer(settings.bootstrap, list(table_of_topic), group)
        probe = BrokerProbe(settings.bootstrap, group)
        await consumer.start()
        try:
            await ClickHouseSink(
                backend,
                consumer,
                table_of_topic,
                SinkConfig(batch_rows, linger_s),
                probe=probe,
            ).run(stop)
        finally:
            try:  # leaving the group: not worth a hang when the broker is gone
                await asyncio.wait_for(consumer.stop(), 2.0)
            except Exception:  # noqa: BLE001
                pass
            await probe.stop()

    asyncio.run(main())


def _stopping(stop: asyncio.Event) -> None:
    if stop.is_set():
        return
    stop.set()
    logging.getLogger("leadflow.sink").info("stopping (at most %.0f s)", STOP_DEADLINE_S)
    timer = threading.Timer(STOP_DEADLINE_S, _exit_now)
    timer.daemon = True
    timer.start()


def _exit_now() -> None:
    print(
        f"leadflow sink: not stopped within {STOP_DEADLINE_S:.0f} s; exiting without further "
        "commits",
        file=sys.stderr,
        flush=True,
    )
    os._exit(3)
