"""A real HTTP receiver on loopback for the notifier's tests: scripted answers, signature checks."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from leadflow.stack import free_port


def new_secret() -> str:
    """A fresh `whsec_` secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: str
    status: int  # what the receiver answered (0: hung up / timed out on our side)
    verified_standard: bool | None
    verified_svix: bool | None

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Answers from `script` (one entry per request, then `default`); entries are an int status,
    ("retry-after", status, seconds), or ("hang", seconds)."""

    secrets: list[str] = field(default_factory=list)
    default: int = 200
    script: list[Any] = field(default_factory=list)
    plan: dict[str, list[Any]] = field(default_factory=dict)  # by the body's instance_id first
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        headers = {k.lower(): v for k, v in request.headers.items()}
        std = svx = None
        if "webhook-signature" in headers and self.secrets:
            std = any(_verifies(StandardWebhook(s), body, headers) for s in self.secrets)
            svx = any(_verifies(SvixWebhook(s), body, headers) for s in self.secrets)
        instance = _instance_of(body)
        if self.plan.get(instance):
            entry = self.plan[instance].pop(0)
        else:
            entry = self.script.pop(0) if self.script else self.default
        record = Request(request.path, headers, body, 0, std, svx)
        self.requests.append(record)
        if isinstance(entry, tuple) and entry[0] == "hang":
            await asyncio.sleep(entry[1])
            return web.Response(status=200, text="too late")
        extra = {}
        status = entry
        if isinstance(entry, tuple) and entry[0] == "retry-after":
            status, extra = entry[1], {"Retry-After": str(entry[2])}
        record.status = status
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=extra)

    async def start(self) -> None:
        self.port = self.port or free_port()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self) -> Counter[str]:
        """webhook-id (or body for unsigned formats) → number of 2xx answers."""
        return Counter(
            r.headers.get("webhook-id", r.body) for r in self.requests if 200 <= r.status < 300
        )


def _verifies(hook: Any, body: str, headers: dict[str, str]) -> bool:
    try:
        hook.verify(body, headers)
    except Exception:
        return False
    return True


def _instance_of(body: str) -> str:
    try:
        return str(orjson.loads(body).get("instance_id"))
    except (orjson.JSONDecodeError, AttributeError):
        return ""
