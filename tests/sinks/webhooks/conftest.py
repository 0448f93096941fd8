"""Factories of the notifier tests: definitions with an alerts: section, SLA records, a notifier."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinks.webhooks.endpoints import resolve_endpoints
from sinks.webhooks.formats import Renderer
from sinks.webhooks.http import Http
from sinks.webhooks.notifier import Notifier
from sinks.webhooks.routing import load_alerts
from sinks.webhooks.store import Store
from streams.core.definitions import DEFAULT_PATH, Definitions, definitions_from_mapping
from streams.core.records import record_id
from streams.definitions_file import PUBLIC_HOLIDAYS


def base_mapping() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(DEFAULT_PATH.read_text()))


def defs_with(alerts: dict[str, Any]) -> Definitions:
    data = base_mapping()
    data["alerts"] = alerts
    return definitions_from_mapping(data, public_holidays=PUBLIC_HOLIDAYS)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sla_record(
    instance: str,
    event: str,
    status: str,
    *,
    at: datetime | None = None,
    owner_id: str | None = "rep-emea-1",
    team_id: str | None = "emea",
    policy: str = "mql_first_touch",
    due_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An SLA record as the worker writes it (records.py `as_dict()`)."""
    at = at or datetime.now(UTC)
    due = due_at or at - timedelta(minutes=20)
    record = {
        "record_id": record_id(instance, event, iso(at)),
        "instance_id": instance,
        "lead_id": f"lead-{instance}",
        "policy": policy,
        "event": event,
        "status": status,
        "started_at": iso(due - timedelta(hours=4)),
        "due_at": iso(due),
        "warn_at": None,
        "breach_at": iso(due + timedelta(minutes=15)),
        "met_at": None,
        "breached_at": iso(due) if status == "breached" else None,
        "warned_at": None,
        "escalated_at": None,
        "corrected_at": None,
        "owner_id": owner_id,
        "team_id": team_id,
        "escalate_to": None,
        "business_seconds": None,
        "target": None,
        "actual": None,
        "at": iso(at),
        "definitions_version": "test",
    }
    record.update(extra)
    return record


def standard_endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "format": "standard",
        "url": url,
        "secrets_env": "TEST_SECRETS",
        "group_wait_s": 0,
        **extra,
    }


FAST_DELIVERY = {
    "timeout_s": 0.5,
    "retry_base_s": 0.2,
    "retry_factor": 2,
    "retry_max_delay_s": 1,
    "max_attempts": 6,
}


@pytest.fixture
def make_notifier(tmp_path: Path) -> Callable[..., Notifier]:
    """A notifier over a fresh store for `alerts` (an alerts: section) with fast retries."""

    def make(
        alerts: dict[str, Any], secrets: str = "", store_name: str = "alerts.sqlite", **kwargs: Any
    ) -> Notifier:
        alerts = {"delivery": dict(FAST_DELIVERY), **alerts}
        defs = defs_with(alerts)
        config = load_alerts(defs)
        endpoints = resolve_endpoints(config, {"TEST_SECRETS": secrets})
        client = Http()
        return Notifier(
            defs,
            config,
            endpoints,
            Store(tmp_path / store_name),
            Renderer(defs, "https://grafana.example.com"),
            client,
            rng=random.Random(7),
            **kwargs,
        )

    return make


async def serve_until(
    notifier: Notifier, done: Callable[[], bool], timeout_s: float = 15.0
) -> float:
    """Run the notifier's dispatch loop until `done()`; returns the seconds it took."""
    import asyncio

    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(notifier.serve(stop, tick_s=0.02))
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    return time.monotonic() - started


async def serve_for(notifier: Notifier, seconds: float) -> None:
    """Run the notifier's dispatch loop for `seconds`."""
    end = time.monotonic() + seconds
    await serve_until(notifier, lambda: time.monotonic() >= end, timeout_s=seconds + 5)
