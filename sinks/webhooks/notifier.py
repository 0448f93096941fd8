"""The notifier: SLA records in; alerts routed, grouped, checked against the instance, then sent.

`ingest` (add) stores each record as its instance's latest state and inserts its alerts once;
`dispatch` forms digests per endpoint after the grouping wait and starts sends within the
endpoint's rate limit and in-flight bound; `_send` checks each alert against the instance's
latest state just before every attempt (never after the fact), then posts and files the outcome.
Per instance, messages go out in order: a message waits while an earlier one holding the same
instance is unfinished (in flight or waiting for a retry).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from schemas.errors import LeadflowError
from schemas.registry import SchemaError
from schemas.serde import decode_record
from sinks.clickhouse.backend import NETWORK_ERRORS, Backend
from sinks.webhooks import deliveries
from sinks.webhooks.endpoints import Endpoint
from sinks.webhooks.formats import MAX_ALERTS_PER_MESSAGE, Alert, Renderer, sign
from sinks.webhooks.http import Http
from sinks.webhooks.routing import AlertsConfig, Kind, Recipient, kind_of, recipients
from sinks.webhooks.store import Store
from streams import metrics
from streams.core.definitions import Definitions
from streams.core.records import record_id

log = logging.getLogger("leadflow.alerts")

_RANK = {Kind.WARNED: 0, Kind.BREACHED: 1, Kind.ESCALATED: 2, Kind.CORRECTED: 3}
_NEVER = float("inf")
_WAIT = "wait"  # a correction whose breach alert is not settled yet: decide later


def _epoch(value: object) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def alert_id_of(sla_record_id: str, endpoint: str) -> str:
    """The alert's id (its `webhook-id`): a function of the SLA record and the endpoint only."""
    return record_id("alert", sla_record_id, endpoint)


class Notifier:
    """One notifier process's state and loops (see the module docstring)."""

    def __init__(
        self,
        defs: Definitions,
        config: AlertsConfig,
        endpoints: Mapping[str, Endpoint],
        store: Store,
        renderer: Renderer,
        client: Http,
        backend: Backend | None = None,
        connect: Callable[[], Backend] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.defs = defs
        self.config = config
        self.endpoints = endpoints
        self.store = store
        self.renderer = renderer
        self.client = client
        self.backend = backend
        self.connect = connect  # makes `backend` (migrated) when ClickHouse was away at start
        self.clock = clock
        self.rng = rng or random.Random()
        self._in_flight: dict[str, set[str]] = {name: set() for name in endpoints}
        self._next_send: dict[str, float] = {}
        self._instances_of: dict[str, frozenset[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._form_after: dict[str, float] = {}
        self._corrections_waiting: set[str] = set()
        self._disabled: dict[str, tuple[float, str]] = {}
        self._disabled_read_at = -_NEVER
        self._last_report = 0.0
        self._last_prune = 0.0

    # --- input ------------------------------------------------------------------------

    def ingest(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store records (arrival order) and their alerts durably; returns alerts added."""
        now = self.clock()
        added = 0
        for raw in records:
            record = dict(raw)
            if not record.get("instance_id") or not record.get("record_id"):
                continue
            if not self.store.keep_latest(record, now):
                continue  # an older revision than the one stored: nothing new to tell
            kind = kind_of(record)
            if kind is None:
                continue
            if record.get("at") and now - _epoch(record["at"]) > self.config.delivery.max_age_s:
                metrics.ALERT_SUPPRESSED.labels("stale").inc()
                continue
            if kind is Kind.CORRECTED:
                told = {
                    name: tuple(Recipient(**who) for who in people)
                    for name, people in self.store.told_of_breach(record["instance_id"]).items()
                }
            else:
                told = recipients(kind, record, self.config, self.defs)
            for name, people in told.items():
                if name not in self.endpoints:
                    continue
                self._form_after[name] = 0.0
                added += self.store.add_alert(
                    alert_id_of(record["record_id"], name),
                    name,
                    kind,
                    record,
                    [_recipient_dict(p) for p in people],
                    now,
                    self._not_before(name, kind, people, now),
                )
        self.store.commit()
        if added:
            self._wake.set()
        return added

    def _not_before(
        self, endpoint: str, kind: Kind, people: Sequence[Recipient], now: float
    ) -> float:
        """Quiet hours: held to the next opening of the recipient team's calendar."""
        if not self.endpoints[endpoint].spec.quiet_hours or self.config.quiet.get(kind) != "hold":
            return now
        team = self.defs.teams.get(people[0].team_id) if people else None
        if team is None:
            return now
        at = datetime.fromtimestamp(now, UTC)
        if team.calendar.is_open(at):
            return now
        return team.calendar.next_open(at).timestamp()

    # --- the never-after-the-fact check -----------------------------------------------

    def _reason(self, alert: Mapping[str, Any], endpoint: str) -> str | None:
        """Why this alert must not go out now (None: send it; _WAIT: decide later)."""
        kind = Kind(alert["kind"])
        if kind is Kind.TARGET_MISSED:
            return None
        if kind is Kind.CORRECTED:
            states = self.store.breach_states(alert["instance_id"], endpoint)
            if any(state in ("pending", "queued") for state, _ in states):
                return _WAIT
            if any(state == "sent" or maybe for state, maybe in states):
                return None
            return "nothing_to_retract"
        latest = self.store.instance(alert["instance_id"])
        if latest is None:
            return None
        if latest.deleted:
            return "retracted"
        if kind is Kind.WARNED:
            return None if latest.status == "open" else latest.status
        if latest.status in ("met", "cancelled"):
            return "corrected" if latest.event == "corrected" else latest.status
        if kind is Kind.ESCALATED and latest.met_at:
            return "met_late"
        return None

    def _suppress(self, alert_id: str, reason: str) -> None:
        self.store.set_alert(alert_id, "suppressed", reason)
        metrics.ALERT_SUPPRESSED.labels(reason).inc()

    # --- grouping and sending ---------------------------------------------------------

    def _form_messages(self, endpoint: str, now: float) -> None:
        if now < self._form_after.get(endpoint, 0.0):
            return  # nothing new since the last look, and nothing held has come due
        spec = self.endpoints[endpoint].spec
        pending = self.store.pending_alerts(endpoint)
        ready = [a for a in pending if a["not_before"] <= now]
        next_look = min((a["not_before"] for a in pending if a["not_before"] > now), default=_NEVER)
        self._form_after[endpoint] = next_look
        self._corrections_waiting.discard(endpoint)
        if not ready:
            return
        batch = []
        for alert in ready:
            reason = self._reason(alert, endpoint)
            if reason == _WAIT:
                self._form_after[endpoint] = min(self._form_after[endpoint], now + 0.25)
                self._corrections_waiting.add(endpoint)
                continue
            if reason is not None:
                self._suppress(alert["alert_id"], reason)
                continue
            batch.append(alert)
        formed_at = min((a["created_at"] for a in batch), default=now) + spec.group_wait_s
        if batch and formed_at > now:
            self._form_after[endpoint] = min(self._form_after[endpoint], formed_at)
        if batch and formed_at <= now:
            batch.sort(
                key=lambda a: (a["record"].get("at") or "", _RANK.get(a["kind"], 9), a["seq"])
            )
            size = MAX_ALERTS_PER_MESSAGE if spec.group_wait_s > 0 else 1  # no wait, no digest
            for i in range(0, len(batch), size):
                chunk = batch[i : i + size]
                ids = [a["alert_id"] for a in chunk]
                message_id = ids[0] if len(ids) == 1 else record_id("digest", endpoint, *ids)
                self.store.add_message(message_id, endpoint, ids, now)
                self._instances_of[message_id] = frozenset(a["instance_id"] for a in chunk)
        self.store.commit()

    def dispatch(self) -> None:
        """Form due digests and start every send the limits allow (returns at once)."""
        now = self.clock()
        if now - self._disabled_read_at >= 1.0:  # `alerts replay` may enable one meanwhile
            self._disabled = self.store.disabled()
            self._disabled_read_at = now
        disabled = self._disabled
        for endpoint, target in self.endpoints.items():
            if endpoint in disabled:
                continue
            self._form_messages(endpoint, now)
            spec = target.spec
            in_flight = self._in_flight[endpoint]
            blocked: set[str] = set()
            for message in self.store.open_messages(endpoint, now, 2 * spec.max_in_flight + 8):
                message_id = message["message_id"]
                instances = self._instances_of.get(message_id)
                if instances is None:
                    alerts = self.store.alerts_of(message["alert_ids"])
                    instances = frozenset(a["instance_id"] for a in alerts)
                    self._instances_of[message_id] = instances
                if message_id in in_flight or message["next_at"] > now or instances & blocked:
                    blocked |= instances
                    continue
                if len(in_flight) >= spec.max_in_flight or self._next_send.get(endpoint, 0) > now:
                    break
                if spec.rate_per_s > 0:
                    self._next_send[endpoint] = now + 1 / spec.rate_per_s
                blocked |= instances
                in_flight.add(message_id)
                task = asyncio.create_task(self._send(target, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, endpoint: Endpoint, message: dict[str, Any]) -> None:
        try:
            await self._attempt(endpoint, message)
        except Exception:
            log.exception(
                "endpoint %s: delivery of %s failed unexpectedly",
                endpoint.name,
                message["message_id"],
            )
        finally:
            self._in_flight[endpoint.name].discard(message["message_id"])
            if endpoint.name in self._corrections_waiting:  # a settled breach frees them
                self._form_after[endpoint.name] = 0.0
            self._wake.set()

    async def _attempt(self, endpoint: Endpoint, message: dict[str, Any]) -> None:
        name, message_id = endpoint.name, message["message_id"]
        keep = []
        for alert in self.store.alerts_of(message["alert_ids"]):
            if alert["state"] != "queued":
                continue
            reason = self._reason(alert, name)
            if reason is not None and reason != _WAIT:
                self._suppress(alert["alert_id"], reason)
            else:
                keep.append(alert)
        now = self.clock()
        attempts = int(message["attempts"])
        if not keep:
            self.store.update_message(
                message_id, "suppressed", attempts, None, now, None, "", "", False
            )
            self.store.commit()
            return
        alerts = [
            Alert(
                a["alert_id"],
                Kind(a["kind"]),
                name,
                a["record"],
                tuple(Recipient(**r) for r in a["recipients"]),
            )
            for a in keep
        ]
        body = self.renderer.body(endpoint.spec.format, message_id, alerts)
        headers = {"content-type": "application/json", "user-agent": "leadflow-alerts"}
        if endpoint.spec.format == "standard":
            headers.update(sign(endpoint, message_id, body, datetime.fromtimestamp(now, UTC)))
        answer = await self.client.post(
            endpoint.url.get_secret_value(), body.encode(), headers, endpoint.spec.timeout_s
        )
        code, response = answer.status, answer.text
        wait = retry_after_s(answer.retry_after, self.clock())
        if answer.timed_out:  # the receiver may have taken it: a later retraction must go
            self.store.mark_maybe_told(a.alert_id for a in alerts)
        done_at = self.clock()
        attempts += 1
        if code is not None and 200 <= code < 300:
            self._file(message_id, alerts, "sent", attempts, None, done_at, code, response, body)
            for told in alerts:
                if told.record.get("at"):
                    metrics.ALERT_DELAY_SECONDS.observe(
                        max(0.0, done_at - _epoch(told.record["at"]))
                    )
            metrics.ALERT_DELIVERIES.labels(name, "sent").inc()
        elif code == 410:
            self.store.disable(name, done_at, f"410 Gone on message {message_id}")
            self._disabled[name] = (done_at, "410 Gone")
            self._file(
                message_id, alerts, "disabled", attempts, None, done_at, code, response, body
            )
            metrics.ALERT_DELIVERIES.labels(name, "disabled").inc()
            log.error(
                "endpoint %s (%s) answered 410 Gone: disabled; fix the webhook and run "
                "`leadflow alerts replay --endpoint %s`",
                name,
                endpoint.label,
                name,
            )
        elif code is not None and 400 <= code < 500 and code != 429:
            self._file(
                message_id, alerts, "rejected", attempts, None, done_at, code, response, body
            )
            metrics.ALERT_DELIVERIES.labels(name, "rejected").inc()
            log.error("endpoint %s refused message %s with %d: not retried", name, message_id, code)
        elif attempts >= self.config.delivery.max_attempts:
            self._file(
                message_id, alerts, "exhausted", attempts, None, done_at, code, response, body
            )
            metrics.ALERT_DELIVERIES.labels(name, "exhausted").inc()
            log.error("endpoint %s: message %s exhausted %d attempts", name, message_id, attempts)
        else:
            delay = self.config.delivery.retry_delay_s(attempts) * self.rng.uniform(0.5, 1.0)
            if wait is not None:
                delay = max(delay, min(wait, self.config.delivery.retry_after_max_s))
            if code == 429:
                self._next_send[name] = max(self._next_send.get(name, 0), done_at + delay)
            self.store.update_message(
                message_id,
                "pending",
                attempts,
                done_at + delay,
                done_at,
                code,
                response,
                body,
                False,
            )
            self.store.commit()
            metrics.ALERT_DELIVERIES.labels(name, "retry").inc()
            log.warning(
                "endpoint %s: attempt %d of %s failed (%s); next in %.1f s",
                name,
                attempts,
                message_id,
                code or response,
                delay,
            )

    def _file(
        self,
        message_id: str,
        alerts: Sequence[Alert],
        status: str,
        attempts: int,
        next_at: float | None,
        at: float,
        code: int | None,
        response: str,
        body: str,
    ) -> None:
        alert_state = {"sent": "sent", "disabled": "disabled", "rejected": "failed"}.get(
            status, status
        )
        for alert in alerts:
            self.store.set_alert(alert.alert_id, alert_state)
        self.store.update_message(
            message_id, status, attempts, next_at, at, code, response, body, status != "sent"
        )
        self.store.commit()

    # --- reporting to ClickHouse ------------------------------------------------------

    async def report(self) -> int:
        """Write given-up messages to `alert_deliveries`; kept for later while ClickHouse is down."""
        messages = self.store.unreported()
        if not messages:
            return 0
        if self.backend is None and self.connect is not None:
            try:
                self.backend = await asyncio.to_thread(self.connect)
            except (LeadflowError, *NETWORK_ERRORS) as exc:
                log.warning(
                    "ClickHouse unreachable (%s); %d delivery rows kept", exc, len(messages)
                )
                return 0
        if self.backend is None:
            return 0
        rows = []
        for message in messages:
            spec = self.endpoints.get(message["endpoint"])
            fmt = spec.spec.format if spec else "unknown"
            alerts = self.store.alerts_of(message["alert_ids"])
            rows.append(deliveries.row(message, alerts, fmt, int(self.clock() * 1000)))
        try:
            await asyncio.to_thread(deliveries.insert, self.backend, rows)
        except NETWORK_ERRORS as exc:
            log.warning(
                "ClickHouse unreachable (%s); %d delivery rows kept",
                exc.__class__.__name__,
                len(rows),
            )
            return 0
        self.store.mark_reported(m["message_id"] for m in messages)
        self.store.commit()
        return len(rows)

    # --- loops ------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event, tick_s: float = 0.05) -> None:
        """Dispatch until `stop`, then wait for sends in flight."""
        while not stop.is_set():
            self.dispatch()
            now = self.clock()
            if now - self._last_report >= 1.0:
                self._last_report = now
                metrics.ALERT_PENDING_RETRIES.set(self.store.pending_retries())
                await self.report()
            if now - self._last_prune >= 600:
                self._last_prune = now
                self.store.prune(now - self.config.delivery.dedupe_retention_s)
                self.store.commit()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), tick_s)
            except TimeoutError:
                pass
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.report()

    async def consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Read SLA records; store them (and their alerts) before committing the offsets."""
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            records = []
            for partition_records in batch.values():
                for message in partition_records:
                    value = message.value or b""
                    try:
                        records.append(
                            orjson.loads(value) if value[:1] == b"{" else decode_record(value)
                        )
                    except (SchemaError, orjson.JSONDecodeError) as exc:
                        log.warning(
                            "undecodable SLA record at %s[%d]@%d skipped: %s",
                            message.topic,
                            message.partition,
                            message.offset,
                            exc,
                        )
            if batch:
                self.ingest(records)
                await consumer.commit()
            if not self._caught_up.is_set() and await _at_end(consumer):
                self._caught_up.set()

    async def run(
        self, consumer: AIOKafkaConsumer, stop: asyncio.Event, catch_up_timeout_s: float = 120.0
    ) -> None:
        """Consume and dispatch until `stop`; sending starts once the backlog is read (or after
        `catch_up_timeout_s`)."""
        reader = asyncio.create_task(self.consume(consumer, stop))
        try:
            # Nothing is sent before the backlog is read: a correction already on the topic must
            # be known before a retried breach goes out (never after the fact, also on restart).
            waiting = asyncio.create_task(self._caught_up.wait())
            await asyncio.wait(
                [waiting, reader], timeout=catch_up_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            waiting.cancel()
            if reader.done():
                reader.result()
            log.info("caught up with the SLA topic; sending")
            await self.serve(stop)
        finally:
            stop.set()
            await reader


async def _at_end(consumer: AIOKafkaConsumer) -> bool:
    """True once every assigned partition was fetched up to its high watermark (from the fetch
    responses, which are right on Tansu where ListOffsets is not)."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in assigned:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


def _recipient_dict(who: Recipient) -> dict[str, Any]:
    return {
        "person_id": who.person_id,
        "name": who.name,
        "team_id": who.team_id,
        "role": str(who.role),
    }


async def post_once(
    client: Http, endpoint: Endpoint, message_id: str, body: str, now: float
) -> tuple[int | None, str]:
    """One attempt of an already-rendered body (signed afresh): (status code or None, text)."""
    headers = {"content-type": "application/json", "user-agent": "leadflow-alerts"}
    if endpoint.spec.format == "standard":
        headers.update(sign(endpoint, message_id, body, datetime.fromtimestamp(now, UTC)))
    answer = await client.post(
        endpoint.url.get_secret_value(), body.encode(), headers, endpoint.spec.timeout_s
    )
    return answer.status, answer.text


async def replay_failed(
    backend: Backend,
    store: Store,
    endpoints: Mapping[str, Endpoint],
    client: Http,
    only_endpoint: str | None = None,
    clock: Callable[[], float] = time.time,
) -> list[tuple[str, str, int | None, str]]:
    """Re-send every message `alert_deliveries` holds as not delivered (same `webhook-id`).

    An endpoint named in a replayed row is enabled again. A message whose alerts the local
    store knows is checked against the instances' latest state first (suppressed if they moved
    on). Returns (message_id, endpoint, code, outcome) per message; each gets a new row."""
    results: list[tuple[str, str, int | None, str]] = []
    rows = []
    for failed in deliveries.failed(backend, only_endpoint):
        name = failed["endpoint"]
        endpoint = endpoints.get(name)
        if endpoint is None:
            results.append((failed["message_id"], name, None, "unknown endpoint: not configured"))
            continue
        store.enable(name)
        alerts = store.alerts_of(failed["alert_ids"])
        latest = {a["instance_id"]: store.instance(a["instance_id"]) for a in alerts}
        gone = [
            a
            for a in alerts
            if a["kind"] in ("breached", "escalated", "warned")
            and (inst := latest[a["instance_id"]]) is not None
            and (inst.deleted or inst.status in ("met", "cancelled"))
        ]
        now = clock()
        message = dict(failed)
        if alerts and len(gone) == len(alerts):
            code, outcome, status = None, "suppressed: the instance has moved on", "suppressed"
        else:
            code, text = await post_once(
                client, endpoint, failed["message_id"], failed["body"], now
            )
            ok = code is not None and 200 <= code < 300
            status = "sent" if ok else "replay_failed"
            outcome = f"{code or ''} {text}".strip()
            message["last_response"] = text
            if ok and store.message(failed["message_id"]) is not None:
                store.update_message(
                    failed["message_id"],
                    "sent",
                    int(failed["attempts"]) + 1,
                    None,
                    now,
                    code,
                    text,
                    failed["body"],
                    False,
                )
                for alert in alerts:
                    store.set_alert(alert["alert_id"], "sent")
        message.update(
            status=status,
            attempts=int(failed["attempts"]) + 1,
            last_code=code,
            first_at=failed["first_attempt_at"].replace(tzinfo=UTC).timestamp(),
            last_at=now,
        )
        rows.append(
            (
                message["message_id"],
                name,
                endpoint.spec.format,
                status,
                message["attempts"],
                code,
                str(message.get("last_response") or "")[:500],
                list(failed["alert_ids"]),
                list(failed["kinds"]),
                list(failed["lead_ids"]),
                list(failed["instance_ids"]),
                failed["first_attempt_at"],
                datetime.fromtimestamp(now, UTC).replace(microsecond=0, tzinfo=None),
                failed["body"],
                int(now * 1000),
            )
        )
        results.append((failed["message_id"], name, code, outcome))
    store.commit()
    deliveries.insert(backend, rows)
    return results
