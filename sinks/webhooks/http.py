"""The HTTP client of the notifier: one aiohttp session, no redirects, outcomes as plain values.

aiohttp rather than httpx: the client's CPU per request is most of a delivery's cost, and
aiohttp's is several times lower (measured side by side in bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt got: a status code (None when no answer came) and a short text."""

    status: int | None
    text: str
    retry_after: str | None = None
    timed_out: bool = False


class Http:
    """POSTs bodies; the session is created on first use inside the running loop."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> Answer:
        """One attempt; never raises for network trouble (a timeout or refusal is an Answer)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit), auto_decompress=False
            )
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                text = (await response.read())[:300].decode("utf-8", "replace")
                return Answer(response.status, text, response.headers.get("retry-after"))
        except TimeoutError as exc:
            return Answer(
                None, f"timeout ({exc.__class__.__name__}) after {timeout_s:g} s", timed_out=True
            )
        except aiohttp.ClientError as exc:
            return Answer(None, f"unreachable ({exc.__class__.__name__})")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
