"""alert_deliveries: the row mapper matches the DDL, and rows round-trip on 18.16 and on chdb."""

from __future__ import annotations

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
