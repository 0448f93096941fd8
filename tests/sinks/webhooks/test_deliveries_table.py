"""alert_deliveries: the row mapper matches the DDL, and rows round-trip on 18.16 and on chdb."""

from __future__ import annotations

from typing import Any

from sinks.clickhouse.backend import Backend, ChdbBackend, ServerBackend
from sinks.webhooks import deliveries


def _message(status: str, attempts: int) -> dict[str, object]:
    return {
        "message_id": "m1",
        "endpoint": "hook",
        "status": status,
        "attempts": attempts,
        "last_code": 503 if status != "sent" else 200,
        "last_response": "no",
        "first_at": 1_767_000_000.0,
        "last_at": 1_767_000_100.0,
        "body": '{"type": "sla.breached"}',
    }


ALERTS = [{"alert_id": "a1", "kind": "breached", "instance_id": "i1", "record": {"lead_id": "L1"}}]


def _round_trip(backend: Backend) -> None:
    columns = [r[0] for r in backend.execute(f"DESCRIBE TABLE {deliveries.TABLE}")]
    assert list(deliveries.COLUMNS) == columns, (
        "sinks/webhooks/deliveries.py COLUMNS differ from the alert_deliveries DDL; add a "
        "migration and update COLUMNS in the same order"
    )
    deliveries.insert(backend, [deliveries.row(_message("exhausted", 12), ALERTS, "standard", 1)])
    (failed,) = deliveries.failed(backend)
    assert (failed["status"], failed["attempts"], failed["lead_ids"]) == ("exhausted", 12, ["L1"])
    deliveries.insert(backend, [deliveries.row(_message("sent", 13), ALERTS, "standard", 2)])
    assert deliveries.failed(backend) == []  # the newer version wins
    assert deliveries.failed(backend, "other") == []


def test_alert_deliveries_on_18_16(server_backend: ServerBackend) -> None:
    _round_trip(server_backend)


def test_alert_deliveries_on_the_current_engine(chdb_loaded: ChdbBackend) -> None:
    _round_trip(chdb_loaded)  # migrated with every migration, 005 included


def test_given_up_messages_wait_while_clickhouse_is_away(
    server_backend: ServerBackend, make_notifier: Any
) -> None:
    import asyncio

    from sinks.clickhouse.backend import ClickHouseUnavailable

    from .conftest import serve_until, sla_record, standard_endpoint
    from .receiver import Receiver, new_secret

    secret = new_secret()
    receiver = Receiver(secrets=[secret], default=400)
    away = [True]

    def connect() -> ServerBackend:
        if away[0]:
            raise ClickHouseUnavailable("ClickHouse does not answer")
        return server_backend

    async def scenario() -> None:
        await receiver.start()
        try:
            alerts = {
                "endpoints": {"hook": standard_endpoint(receiver.url)},
                "teams": {"emea": ["hook"]},
                "marketing_owner": "mkt-owner",
            }
            notifier = make_notifier(alerts, secrets=secret, connect=connect)
            notifier.ingest([sla_record("ch1", "breached", "breached")])
            await serve_until(notifier, lambda: bool(notifier.store.unreported()))
            assert await notifier.report() == 0  # ClickHouse away: kept
            assert len(notifier.store.unreported()) == 1
            away[0] = False
            assert await notifier.report() == 1
            assert notifier.store.unreported() == []
        finally:
            await receiver.stop()

    asyncio.run(scenario())
    (row,) = deliveries.failed(server_backend)
    assert (row["status"], row["last_status_code"]) == ("rejected", 400)
