"""ConfluentRegistry through python-schema-registry-client.

No Schema Registry server is installable here, so this runs against a small loopback HTTP server
(below) that implements only the endpoints the client calls: register a schema under a subject
and fetch a schema by id. It checks our wiring of the client, not the real server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas.registry import ConfluentRegistry
from schemas.serde import Codec, decode_event, encode_event


class _FakeRegistry(BaseHTTPRequestHandler):
    schemas: dict[int, str] = {}
    ids: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            schema = json.dumps(json.loads(body["schema"]), sort_keys=True)
            if schema not in self.ids:
                self.ids[schema] = 100 + len(self.ids)
                self.schemas[self.ids[schema]] = schema
            self._reply(200, {"id": self.ids[schema]})
        else:
            self._reply(404, {"error_code": 40401, "message": "not found"})

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in self.schemas:
            self._reply(200, {"schema": self.schemas[int(parts[2])]})
        else:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture
def registry_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_encode_registers_and_decode_fetches_by_id(registry_url: str) -> None:
    writer = Codec(ConfluentRegistry(registry_url))
    event = {
        "event_id": "e1",
        "event_type": "lead_erased",
        "occurred_at": "2026-01-01T00:00:00Z",
        "source": "privacy",
        "lead_id": "L1",
    }
    framed = encode_event(event, writer)
    assert (
        int.from_bytes(framed[1:5], "big") >= 100
    )  # id assigned by the registry, not the manifest
    reader = Codec(ConfluentRegistry(registry_url))  # a fresh client: must fetch the schema by id
    assert decode_event(framed, reader) == event
