"""The alert notifier: throughput to a loopback receiver, and breach → receiver delay in live mode.

    python bench/alerts_bench.py throughput [--alerts 3000] [--in-flight 8]
    python bench/alerts_bench.py latency [--rate 1000] [--seconds 20]

throughput: a receiver process answers 200 at once; (a) raw httpx posts and (a') raw aiohttp posts
(the notifier's client) of a rendered alert body with the same concurrency, (b) the notifier end to end (sqlite store, routing, the
never-after-the-fact check, rendering, Standard Webhooks signing, posting, filing the outcome),
one message per alert (no grouping wait). Prints alerts/s and the ratio b/a.

latency: its own embedded stack on free ports; `leadflow worker --clock live` and
`leadflow alerts` as processes; definitions with 24/7 calendars and a 3.6-second SLA (no grace);
input at `--rate` events/s of which 20 leads/s become MQLs and breach. Prints p50/p99 of
(receiver got the request − breach instant, the record's `at`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from leadflow.stack import free_port  # noqa: E402


def _receiver_process(port: int, ready: Any) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _record(n: int) -> dict[str, Any]:
    from streams.core.records import record_id

    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    instance = f"bench-{n}"
    return {
        "record_id": record_id(instance, "breached"),
        "instance_id": instance,
        "lead_id": f"lead-{n}",
        "policy": "mql_first_touch",
        "event": "breached",
        "status": "breached",
        "started_at": now,
        "due_at": now,
        "breach_at": now,
        "breached_at": now,
        "owner_id": "rep-emea-1",
        "team_id": "emea",
        "escalate_to": None,
        "at": now,
        "definitions_version": "bench",
    }


async def _raw_aiohttp(url: str, body: bytes, count: int, in_flight: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                async with session.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as answer:
                    await answer.read()
                    answer.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return count / (time.perf_counter() - started)


async def _raw(url: str, body: bytes, count: int, in_flight: int) -> float:
    async with httpx.AsyncClient() as client:
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                answer = await client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                answer.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return count / (time.perf_counter() - started)


async def _notifier(url: str, count: int, in_flight: int, tmp: Path) -> tuple[float, float]:
    import base64

    from sinks.webhooks.endpoints import resolve_endpoints
    from sinks.webhooks.formats import Renderer
    from sinks.webhooks.http import Http
    from sinks.webhooks.notifier import Notifier
    from sinks.webhooks.routing import load_alerts
    from sinks.webhooks.store import Store
    from streams.core.definitions import DEFAULT_PATH, definitions_from_mapping
    from streams.definitions_file import PUBLIC_HOLIDAYS

    data = yaml.safe_load(DEFAULT_PATH.read_text())
    data["alerts"] = {
        "endpoints": {
            "hook": {
                "format": "standard",
                "url": url,
                "secrets_env": "SECRET",
                "group_wait_s": 0,
                "max_in_flight": in_flight,
                "quiet_hours": False,
            }
        },
        "teams": {"emea": ["hook"]},
        "routes": {"breached": ["manager"]},
        "marketing_owner": "mkt-owner",
    }
    defs = definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)
    config = load_alerts(defs)
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    endpoints = resolve_endpoints(config, {"SECRET": secret})
    store = Store(tmp / "bench.sqlite")
    client = Http()
    try:
        notifier = Notifier(defs, config, endpoints, store, Renderer(defs, "https://g"), client)
        records = [_record(n) for n in range(count)]
        started = time.perf_counter()
        for i in range(0, count, 500):  # as the Kafka consumer hands them over
            notifier.ingest(records[i : i + 500])
        ingest_rate = count / (time.perf_counter() - started)
        stop = asyncio.Event()
        started = time.perf_counter()
        serving = asyncio.create_task(notifier.serve(stop, tick_s=0.01))

        def sent() -> int:
            return int(
                store.db.execute("SELECT count() FROM alerts WHERE state = 'sent'").fetchone()[0]
            )

        while sent() < count:
            await asyncio.sleep(0.02)
        rate = count / (time.perf_counter() - started)
        stop.set()
        await serving
    finally:
        await client.close()
    store.close()
    return rate, ingest_rate


def throughput(args: argparse.Namespace) -> None:
    from sinks.webhooks.formats import Alert, Renderer
    from sinks.webhooks.routing import Kind, Recipient
    from streams.definitions_file import load_definitions

    port = free_port()
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(target=_receiver_process, args=(port, ready), daemon=True)
    receiver.start()
    ready.wait(10)
    url = f"http://127.0.0.1:{port}/hook"
    defs = load_definitions()
    who = (Recipient("mgr-emea", "Lena Hoffmann", "emea", "manager"),)
    body = Renderer(defs, "https://g").body(
        "standard", "x", [Alert("x", Kind.BREACHED, "hook", _record(0), who)]
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(2):
                raw = asyncio.run(_raw(url, body.encode(), args.alerts, args.in_flight))
                raw_aio = asyncio.run(_raw_aiohttp(url, body.encode(), args.alerts, args.in_flight))
                ours, ingest = asyncio.run(
                    _notifier(url, args.alerts, args.in_flight, Path(tmp) / str(round_no))
                )
                print(
                    f"round {round_no + 1}: {args.alerts:,} alerts, {args.in_flight} in flight: "
                    f"raw httpx {raw:,.0f} posts/s, raw aiohttp {raw_aio:,.0f} posts/s; notifier "
                    f"{ours:,.0f} alerts/s (ratio {ours / raw:.2f} of raw httpx, "
                    f"{ours / raw_aio:.2f} of raw aiohttp); ingest {ingest:,.0f} records/s"
                )
    finally:
        receiver.kill()


# --- live latency ---------------------------------------------------------------------------


def _definitions(tmp: Path) -> Path:
    from streams.core.definitions import DEFAULT_PATH

    data = yaml.safe_load(DEFAULT_PATH.read_text())
    every_day = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00-23:59")
    for team in data["teams"]:
        team["hours"], team["holidays"], team["timezone"] = every_day, [], "UTC"
    data["sla"]["policies"] = [
        {
            "name": "mql_first_touch",
            "starts_at": "mql",
            "met_by": ["activity"],
            "business_hours": 0.001,
            "grace_minutes": 0,
        }
    ]
    data["alerts"] = {
        "endpoints": {
            "hook": {
                "format": "standard",
                "url_env": "BENCH_HOOK_URL",
                "secrets_env": "BENCH_HOOK_SECRETS",
                "group_wait_s": 0,
                "max_in_flight": 8,
                "quiet_hours": False,
            }
        },
        "teams": {"emea": ["hook"], "amer": ["hook"]},
        "routes": {"breached": ["manager"]},
        "marketing_owner": "mkt-owner",
    }
    path = tmp / "definitions.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _event(kind: str, lead: str, **extra: Any) -> bytes:
    base = {
        "event_id": uuid.uuid4().hex,
        "event_type": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "bench",
        "lead_id": lead,
    }
    return orjson.dumps({**base, **extra})


async def _drive(
    bootstrap: str,
    rate: int,
    seconds: int,
    arrivals: list[tuple[float, dict[str, Any]]],
    written_at: dict[str, float],
) -> tuple[int, int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from leadflow.producer import encode_line

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=2)
    await producer.start()
    sent = 0
    mqls = 0
    # when each breach record reached Kafka (its CreateTime): splits the delay into the worker's
    # leg (breach instant → record written) and the notifier's (record → receiver)
    consumer = AIOKafkaConsumer("leadflow.sla", bootstrap_servers=bootstrap, fetch_max_wait_ms=20)
    await consumer.start()

    async def watch() -> None:
        from schemas.serde import decode_record

        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for message in records:
                    record = decode_record(message.value or b"")
                    written_at[str(record["record_id"])] = message.timestamp / 1000

    watcher = asyncio.create_task(watch())

    async def send(line: bytes) -> None:
        topic, key, value, _ = encode_line(line, "avro")
        await producer.send(topic, value, key=key)

    def new_mql(n: int) -> list[bytes]:
        lead = f"hot-{n}"
        return [
            _event("lead_created", lead, owner_id="rep-emea-1", team_id="emea", attributes={}),
            _event(
                "touch", lead, touch_type="demo_request", channel="paid_search", campaign_id=None
            ),
        ]

    try:
        # warm-up: MQLs every half second until the first alert comes out
        warm = 0
        while not arrivals:
            for line in new_mql(10_000_000 + warm):
                await send(line)
            warm += 1
            await producer.flush()
            await asyncio.sleep(0.5)
        arrivals.clear()
        started = time.perf_counter()
        background = 0
        while time.perf_counter() - started < seconds:
            tick = time.perf_counter()
            for _ in range(20):  # 20 MQLs (40 events) per second breach 3.6 s later
                for line in new_mql(mqls):
                    await send(line)
                mqls += 1
            for _ in range(rate - 40):
                lead = f"bg-{background % 5000}"
                background += 1
                await send(
                    _event(
                        "touch",
                        lead,
                        touch_type="page_view",
                        channel="organic_search",
                        campaign_id=None,
                    )
                )
            sent += rate
            await producer.flush()
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
        await asyncio.sleep(8)  # the last breaches fire 3.6 s later
    finally:
        watcher.cancel()
        await consumer.stop()
        await producer.stop()
    return sent, mqls


def latency(args: argparse.Namespace) -> None:
    import base64

    from leadflow.kafka_admin import create_topics
    from leadflow.stack import private_stack

    arrivals: list[tuple[float, dict[str, Any]]] = []
    written_at: dict[str, float] = {}

    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        arrivals.append((time.time(), body))
        return web.Response(text="ok")

    loop = asyncio.new_event_loop()
    port = free_port()

    async def start_receiver() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(start_receiver(), loop).result(10)
    with tempfile.TemporaryDirectory() as tmp, private_stack(Path(tmp) / "stack") as stack:
        settings = stack.settings
        create_topics(settings.bootstrap, settings.partitions)
        env = {
            **os.environ,
            "LEADFLOW_KAFKA_PORT": str(settings.kafka_port),
            "LEADFLOW_CLICKHOUSE_PORT": str(settings.clickhouse_port),
            "LEADFLOW_STATE_DIR": tmp,
            "LEADFLOW_DEFINITIONS": str(_definitions(Path(tmp))),
            "LEADFLOW_ALERTS_METRICS_PORT": "0",
            "LEADFLOW_WORKER_METRICS_PORT": "0",
            "BENCH_HOOK_URL": f"http://127.0.0.1:{port}/hook",
            "BENCH_HOOK_SECRETS": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "leadflow", *command],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(Path(tmp) / f"{command[0]}.log", "wb"),  # noqa: SIM115
                start_new_session=True,
            )
            for command in (["worker", "--clock", "live"], ["alerts", "--no-clickhouse"])
        ]
        try:
            sent, mqls = asyncio.run(
                _drive(settings.bootstrap, args.rate, args.seconds, arrivals, written_at)
            )
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    measured = [
        (at, body)
        for at, body in arrivals
        if str(body.get("lead_id", "")).startswith("hot-")
        and not str(body["lead_id"]).startswith("hot-1000")
    ]
    if not measured:
        print("no breach alerts arrived")
        return
    known = [(at, b) for at, b in measured if b["sla_record_id"] in written_at]
    print(
        f"live: {sent:,} events at {args.rate}/s for {args.seconds} s, {mqls:,} SLAs breached, "
        f"{len(measured):,} alerts received"
    )
    for name, values in (
        ("breach instant → receiver", [at - _instant(b["occurred_at"]) for at, b in measured]),
        (
            "  breach instant → SLA record in Kafka (the worker's timer)",
            [written_at[b["sla_record_id"]] - _instant(b["occurred_at"]) for _, b in known],
        ),
        (
            "  SLA record in Kafka → receiver (the notifier)",
            [at - written_at[b["sla_record_id"]] for at, b in known],
        ),
    ):
        values.sort()
        if values:
            p50 = values[len(values) // 2]
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(
                f"{name}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"
            )


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--alerts", type=int, default=3000)
    t.add_argument("--in-flight", type=int, default=8)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=int, default=1000)
    lat.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    random.seed(1)
    {"throughput": throughput, "latency": latency}[args.what](args)


if __name__ == "__main__":
    main()
