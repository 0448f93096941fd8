"""`leadflow alerts` as a process on the real broker and ClickHouse: SIGKILLed mid-retry, it
resumes without loss or duplicate; given-up messages land in alert_deliveries and replay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from kafka.admin import NewTopic

from leadflow.kafka_admin import admin_client
from leadflow.settings import Settings
from schemas.serde import encode_record
from sinks.clickhouse.backend import ServerBackend
from sinks.webhooks import deliveries

from .conftest import base_mapping, sla_record
from .receiver import Receiver, new_secret


class ThreadedReceiver:
    """The loopback receiver on its own event loop thread (the test blocks on processes)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)
        return self.receiver

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with ThreadedReceiver(Receiver(secrets=[new_secret()], default=500)) as running:
        yield running


def _produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for record in records:
                key = str(record["lead_id"]).encode()
                await producer.send(topic, encode_record("sla", record), key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def _until(done: Callable[[], bool], timeout_s: float, what: str, proc: Any = None) -> None:
    end = time.monotonic() + timeout_s
    while not done():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"notifier exited while waiting for {what}: {proc.log.read_text()[-3000:]}"
            )
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_notifier_survives_sigkill_mid_retry_and_replays_what_it_gave_up(
    stack: Settings,
    unique_name: Callable[[str], str],
    server_backend: ServerBackend,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    topic, group = unique_name("sla"), unique_name("alerts")
    admin = admin_client(stack.bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    definitions = base_mapping()
    definitions["alerts"] = {
        "endpoints": {
            "hook": {
                "format": "standard",
                "url_env": "HOOK_URL",
                "secrets_env": "HOOK_SECRETS",
                "group_wait_s": 0,
                "max_in_flight": 4,
            },
            "picky": {
                "format": "standard",
                "url_env": "PICKY_URL",
                "secrets_env": "HOOK_SECRETS",
                "group_wait_s": 0,
            },
        },
        "teams": {"emea": ["hook"], "amer": ["picky"]},
        "marketing_owner": "mkt-owner",
        "routes": {"breached": ["manager"]},
        "delivery": {
            "timeout_s": 1,
            "retry_base_s": 0.3,
            "retry_factor": 2,
            "retry_max_delay_s": 0.8,
            "max_attempts": 1000,
        },
    }
    path = tmp_path / "definitions.yaml"
    path.write_text(yaml.safe_dump(definitions))
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_PORT": str(stack.kafka_port),
        "LEADFLOW_CLICKHOUSE_HOST": stack.clickhouse_host,
        "LEADFLOW_CLICKHOUSE_PORT": str(stack.clickhouse_port),
        "LEADFLOW_CLICKHOUSE_DATABASE": server_backend.database,
        "LEADFLOW_STATE_DIR": str(tmp_path / "state"),
        "LEADFLOW_DEFINITIONS": str(path),
        "LEADFLOW_ALERTS_METRICS_PORT": "0",
        "HOOK_URL": receiver.url,
        "PICKY_URL": receiver.url.replace("/hook", "/picky"),
        "HOOK_SECRETS": receiver.secrets[0],
    }

    def start() -> subprocess.Popen[bytes]:
        log = tmp_path / f"alerts-{time.monotonic_ns()}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "leadflow", "alerts", "--topic", topic, "--group", group],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        proc.log = log  # type: ignore[attr-defined]
        return proc

    first = [sla_record(f"i{n}", "breached", "breached") for n in range(20)]
    picky = sla_record("p1", "breached", "breached", owner_id="rep-amer-1", team_id="amer")
    receiver.plan["p1"] = [400]
    _produce(stack.bootstrap, topic, [*first, picky])
    notifier = start()
    try:
        # mid-retry: every alert refused with 500 at least twice
        _until(
            lambda: len([r for r in receiver.requests if r.status == 500]) >= 40,
            60,
            "retries",
            notifier,
        )
        os.killpg(notifier.pid, signal.SIGKILL)
        notifier.wait(10)
        refused = len(receiver.requests)
        later = [sla_record(f"j{n}", "breached", "breached") for n in range(5)]
        correction = sla_record("i0", "corrected", "met", met_at=first[0]["due_at"])
        _produce(stack.bootstrap, topic, [*later, correction])
        receiver.default = 200
        notifier = start()
        expected = {f"i{n}" for n in range(1, 20)} | {f"j{n}" for n in range(5)}

        def delivered_instances() -> set[str]:
            return {r.json["instance_id"] for r in receiver.requests if r.status == 200}

        _until(lambda: delivered_instances() >= expected, 60, "deliveries", notifier)
        _until(lambda: deliveries.failed(server_backend), 30, "the alert_deliveries row", notifier)
        time.sleep(1.0)  # anything that would go twice has had time to
    finally:
        if notifier.poll() is None:
            os.killpg(notifier.pid, signal.SIGTERM)
            notifier.wait(30)
    assert len(receiver.requests) > refused
    counts = receiver.delivered()
    assert len(counts) == 24 and set(counts.values()) == {1}  # each webhook-id exactly once
    assert delivered_instances() == expected  # i0 was corrected before anyone heard of it
    assert all(r.verified_standard and r.verified_svix for r in receiver.requests)
    (row,) = deliveries.failed(server_backend)
    assert (row["endpoint"], row["status"], row["last_status_code"], row["lead_ids"]) == (
        "picky",
        "rejected",
        400,
        ["lead-p1"],
    )

    replay = subprocess.run(
        [sys.executable, "-m", "leadflow", "alerts", "--group", group, "replay"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 message(s)" in replay.stdout
    assert deliveries.failed(server_backend) == []
    assert [r.json["instance_id"] for r in receiver.requests if r.status == 200].count("p1") == 1
    assert receiver.requests[-1].headers["webhook-id"] == row["message_id"]  # the same id

    status = subprocess.run(
        [sys.executable, "-m", "leadflow", "alerts", "--group", group, "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "hook" in status.stdout and "picky" in status.stdout
    assert receiver.secrets[0] not in status.stdout and "/hook" not in status.stdout

    sample = subprocess.run(
        [sys.executable, "-m", "leadflow", "alerts", "test", "--endpoint", "hook"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sample.returncode == 0, sample.stderr
    assert "response: 200 ok" in sample.stdout
    assert receiver.requests[-1].json["lead_id"] == "lead-sample"
    assert receiver.requests[-1].verified_svix
    for log in tmp_path.glob("alerts-*.log"):
        text = log.read_text()
        assert receiver.secrets[0] not in text and receiver.url not in text  # no secrets, no URLs
