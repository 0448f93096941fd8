"""The notifier's durable state in one sqlite file: instances' latest records, alerts, messages.

Survives SIGKILL (WAL, committed per batch of input and per delivery outcome): an alert id is
inserted once (`INSERT OR IGNORE`), so a Kafka re-delivery after a restart changes nothing, and
pending retries resume where they were. Rows are kept `dedupe_retention_s` after they are done,
longer than the whole retry window.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY, revision INTEGER, status TEXT, event TEXT, deleted INTEGER,
    met_at TEXT, record TEXT, updated_at REAL);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY, endpoint TEXT, kind TEXT, instance_id TEXT, record TEXT,
    recipients TEXT, created_at REAL, not_before REAL, state TEXT, message_id TEXT,
    reason TEXT, maybe_told INTEGER DEFAULT 0, seq INTEGER);
CREATE INDEX IF NOT EXISTS alerts_by_endpoint ON alerts(endpoint, state, seq);
CREATE INDEX IF NOT EXISTS alerts_by_instance ON alerts(instance_id, endpoint);
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY, endpoint TEXT, alert_ids TEXT, seq INTEGER, status TEXT,
    attempts INTEGER, next_at REAL, first_at REAL, last_at REAL, last_code INTEGER,
    last_response TEXT, body TEXT, reported INTEGER DEFAULT 1);
CREATE INDEX IF NOT EXISTS messages_by_endpoint ON messages(endpoint, status, seq);
CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, disabled_at REAL, reason TEXT);
"""
DONE_ALERT_STATES = ("sent", "suppressed", "failed", "exhausted", "disabled")
OPEN_MESSAGE = "pending"


@dataclass(frozen=True, slots=True)
class Instance:
    """The latest record seen of one SLA instance."""

    instance_id: str
    revision: int | None
    status: str
    event: str
    deleted: bool
    met_at: str | None


class Store:
    """sqlite under the state dir; one connection, used from the event loop's thread only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._seq = max(
            int(self.db.execute(f"SELECT coalesce(max(seq), 0) FROM {table}").fetchone()[0])
            for table in ("alerts", "messages")
        )
        self.db.execute("BEGIN")

    def commit(self) -> None:
        """Make everything since the last commit durable."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def close(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()

    def next_seq(self) -> int:
        """The next arrival number (alerts and messages share one sequence)."""
        self._seq += 1
        return self._seq

    # --- instances --------------------------------------------------------------------

    def instance(self, instance_id: str) -> Instance | None:
        row = self.db.execute(
            "SELECT instance_id, revision, status, event, deleted, met_at FROM instances "
            "WHERE instance_id = ?",
            (instance_id,),
        ).fetchone()
        return Instance(row[0], row[1], row[2], row[3], bool(row[4]), row[5]) if row else None

    def keep_latest(self, record: dict[str, Any], now: float) -> bool:
        """Store `record` as its instance's latest unless a newer revision is stored; True if kept.

        Newest is by `revision` when records carry one, else by arrival."""
        revision = record.get("revision")
        current = self.instance(str(record["instance_id"]))
        if (
            current is not None
            and revision is not None
            and current.revision is not None
            and int(revision) < current.revision
        ):
            return False
        self.db.execute(
            "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record["instance_id"],
                None if revision is None else int(revision),
                record.get("status"),
                record.get("event"),
                1 if record.get("deleted") else 0,
                record.get("met_at"),
                orjson.dumps(record).decode(),
                now,
            ),
        )
        return True

    # --- alerts -----------------------------------------------------------------------

    def add_alert(
        self,
        alert_id: str,
        endpoint: str,
        kind: str,
        record: dict[str, Any],
        recipients: list[dict[str, Any]],
        now: float,
        not_before: float,
    ) -> bool:
        """Insert a pending alert once; False when this id is known already (a re-delivery)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO alerts (alert_id, endpoint, kind, instance_id, record, "
            "recipients, created_at, not_before, state, seq) VALUES (?,?,?,?,?,?,?,?,'pending',?)",
            (
                alert_id,
                endpoint,
                kind,
                record["instance_id"],
                orjson.dumps(record).decode(),
                orjson.dumps(recipients).decode(),
                now,
                not_before,
                self._seq + 1,
            ),
        )
        if cursor.rowcount == 1:
            self._seq += 1
            return True
        return False

    def told_of_breach(self, instance_id: str) -> dict[str, list[dict[str, Any]]]:
        """Endpoint → recipients of this instance's breach/escalation alerts (any state)."""
        told: dict[str, list[dict[str, Any]]] = {}
        for endpoint, recipients in self.db.execute(
            "SELECT endpoint, recipients FROM alerts WHERE instance_id = ? "
            "AND kind IN ('breached', 'escalated') ORDER BY seq",
            (instance_id,),
        ):
            people = told.setdefault(endpoint, [])
            for who in orjson.loads(recipients):
                if who not in people:
                    people.append(who)
        return told

    def breach_states(self, instance_id: str, endpoint: str) -> list[tuple[str, int]]:
        """(state, maybe_told) of this instance's breach/escalation alerts on `endpoint`."""
        return [
            (str(state), int(maybe))
            for state, maybe in self.db.execute(
                "SELECT state, maybe_told FROM alerts WHERE instance_id = ? AND endpoint = ? "
                "AND kind IN ('breached', 'escalated')",
                (instance_id, endpoint),
            )
        ]

    def pending_alerts(self, endpoint: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT alert_id, kind, instance_id, record, recipients, created_at, not_before, seq "
            "FROM alerts WHERE endpoint = ? AND state = 'pending' ORDER BY seq",
            (endpoint,),
        ).fetchall()
        return [
            {
                "alert_id": r[0],
                "kind": r[1],
                "instance_id": r[2],
                "record": orjson.loads(r[3]),
                "recipients": orjson.loads(r[4]),
                "created_at": r[5],
                "not_before": r[6],
                "seq": r[7],
            }
            for r in rows
        ]

    def alerts_of(self, alert_ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = list(alert_ids)
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT alert_id, kind, instance_id, record, recipients, state, seq, endpoint "
            f"FROM alerts WHERE alert_id IN ({marks}) ORDER BY seq",
            ids,
        ).fetchall()
        return [
            {
                "alert_id": r[0],
                "kind": r[1],
                "instance_id": r[2],
                "record": orjson.loads(r[3]),
                "recipients": orjson.loads(r[4]),
                "state": r[5],
                "seq": r[6],
                "endpoint": r[7],
            }
            for r in rows
        ]

    def set_alert(self, alert_id: str, state: str, reason: str | None = None) -> None:
        self.db.execute(
            "UPDATE alerts SET state = ?, reason = coalesce(?, reason) WHERE alert_id = ?",
            (state, reason, alert_id),
        )

    def mark_maybe_told(self, alert_ids: Iterable[str]) -> None:
        self.db.executemany(
            "UPDATE alerts SET maybe_told = 1 WHERE alert_id = ?", [(a,) for a in alert_ids]
        )

    # --- messages ---------------------------------------------------------------------

    def add_message(self, message_id: str, endpoint: str, alert_ids: list[str], now: float) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO messages (message_id, endpoint, alert_ids, seq, status, "
            "attempts, next_at, first_at, last_at, last_code, last_response, body) "
            "VALUES (?, ?, ?, ?, 'pending', 0, ?, NULL, NULL, NULL, '', '')",
            (message_id, endpoint, orjson.dumps(alert_ids).decode(), self.next_seq(), now),
        )
        self.db.executemany(
            "UPDATE alerts SET state = 'queued', message_id = ? WHERE alert_id = ?",
            [(message_id, a) for a in alert_ids],
        )

    def open_messages(self, endpoint: str, now: float, due_limit: int = 64) -> list[dict[str, Any]]:
        """The endpoint's unfinished messages in order: the oldest `due_limit` due by `now`, and
        every one waiting for a retry (normally few), which hold back later messages of their
        instances."""
        columns = "message_id, alert_ids, attempts, next_at, first_at, seq"
        rows = self.db.execute(
            f"SELECT {columns} FROM messages WHERE endpoint = ? AND status = 'pending' "
            "AND next_at <= ? ORDER BY seq LIMIT ?",
            (endpoint, now, due_limit),
        ).fetchall()
        if rows:
            rows += self.db.execute(
                f"SELECT {columns} FROM messages WHERE endpoint = ? AND status = 'pending' "
                "AND next_at > ? AND seq < ? ORDER BY seq LIMIT 10000",
                (endpoint, now, rows[-1][5]),
            ).fetchall()
            rows.sort(key=lambda r: r[5])
        return [
            {
                "message_id": r[0],
                "alert_ids": orjson.loads(r[1]),
                "attempts": r[2],
                "next_at": r[3],
                "first_at": r[4],
            }
            for r in rows
        ]

    def message(self, message_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT message_id, endpoint, alert_ids, status, attempts, next_at, first_at, "
            "last_at, last_code, last_response, body FROM messages WHERE message_id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        keys = (
            "message_id endpoint alert_ids status attempts next_at first_at last_at "
            "last_code last_response body"
        ).split()
        out = dict(zip(keys, row, strict=True))
        out["alert_ids"] = orjson.loads(out["alert_ids"])
        return out

    def update_message(
        self,
        message_id: str,
        status: str,
        attempts: int,
        next_at: float | None,
        at: float,
        code: int | None,
        response: str,
        body: str,
        report: bool,
    ) -> None:
        self.db.execute(
            "UPDATE messages SET status = ?, attempts = ?, next_at = ?, "
            "first_at = coalesce(first_at, ?), last_at = ?, last_code = ?, last_response = ?, "
            "body = ?, reported = ? WHERE message_id = ?",
            (
                status,
                attempts,
                next_at,
                at,
                at,
                code,
                response,
                body,
                0 if report else 1,
                message_id,
            ),
        )

    def unreported(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in self.db.execute("SELECT message_id FROM messages WHERE reported = 0")]
        return [m for m in (self.message(i) for i in ids) if m is not None]

    def mark_reported(self, message_ids: Iterable[str]) -> None:
        self.db.executemany(
            "UPDATE messages SET reported = 1 WHERE message_id = ?", [(m,) for m in message_ids]
        )

    # --- endpoints and status ---------------------------------------------------------

    def disable(self, endpoint: str, now: float, reason: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO endpoints VALUES (?, ?, ?)", (endpoint, now, reason)
        )

    def enable(self, endpoint: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE name = ?", (endpoint,))

    def disabled(self) -> dict[str, tuple[float, str]]:
        return {
            str(n): (float(t), str(r))
            for n, t, r in self.db.execute("SELECT name, disabled_at, reason FROM endpoints")
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """Endpoint → {pending alerts, pending retries (messages attempted at least once), ...}."""
        out: dict[str, dict[str, int]] = {}
        for endpoint, state, n in self.db.execute(
            "SELECT endpoint, state, count() FROM alerts GROUP BY endpoint, state"
        ):
            out.setdefault(endpoint, {})[f"alerts_{state}"] = n
        for endpoint, n in self.db.execute(
            "SELECT endpoint, count() FROM messages WHERE status = 'pending' AND attempts > 0 "
            "GROUP BY endpoint"
        ):
            out.setdefault(endpoint, {})["pending_retries"] = n
        return out

    def pending_retries(self) -> int:
        row = self.db.execute(
            "SELECT count() FROM messages WHERE status = 'pending' AND attempts > 0"
        ).fetchone()
        return int(row[0])

    def prune(self, before: float) -> None:
        """Forget what was finished before `before` (epoch seconds)."""
        self.db.execute(
            "DELETE FROM alerts WHERE created_at < ? AND state IN "
            "('sent','suppressed','failed','exhausted','disabled')",
            (before,),
        )
        self.db.execute(
            "DELETE FROM messages WHERE status != 'pending' AND reported = 1 AND last_at < ?",
            (before,),
        )
        self.db.execute(
            "DELETE FROM instances WHERE updated_at < ? AND instance_id NOT IN "
            "(SELECT instance_id FROM alerts)",
            (before,),
        )
