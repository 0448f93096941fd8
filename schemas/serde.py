"""Avro in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary).

Input events: canonical JSON object (DESIGN.md §5) ⇄ framed Avro, one record type per
event_type. Output records: `as_dict()` of streams/core/records.py ⇄ framed Avro. Data written
with an earlier schema version is read through Avro schema resolution into the current one.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from schemas.registry import FileRegistry, Registry, SchemaError, parsed, raw_schema

MAGIC = 0
_HEADER = struct.Struct(">bI")
MAX_EVENT_BYTES = 64 * 1024

EVENT_SCHEMAS: dict[str, str] = {
    "touch": "io.leadflow.events.v2.Touch",
    "lead_created": "io.leadflow.events.v1.LeadCreated",
    "lead_updated": "io.leadflow.events.v1.LeadUpdated",
    "owner_assigned": "io.leadflow.events.v1.OwnerAssigned",
    "lead_identified": "io.leadflow.events.v1.LeadIdentified",
    "lead_merged": "io.leadflow.events.v1.LeadMerged",
    "lead_erased": "io.leadflow.events.v1.LeadErased",
    "activity": "io.leadflow.events.v1.Activity",
    "lead_accepted": "io.leadflow.events.v1.LeadAccepted",
    "lead_qualified": "io.leadflow.events.v1.LeadQualified",
    "lead_rejected": "io.leadflow.events.v1.LeadRejected",
    "opportunity_created": "io.leadflow.events.v1.OpportunityCreated",
    "deal_won": "io.leadflow.events.v1.DealWon",
    "deal_lost": "io.leadflow.events.v1.DealLost",
}
RECORD_SCHEMAS: dict[str, str] = {
    "transition": "io.leadflow.outputs.v2.Transition",
    "sla": "io.leadflow.outputs.v2.SlaRecord",
    "attribution": "io.leadflow.outputs.v2.AttributionCredit",
    "lead_state": "io.leadflow.outputs.v1.LeadStateSnapshot",
    "dead_letter": "io.leadflow.outputs.v1.DeadLetter",
}
# record family (name without the version) -> current full name
_CURRENT = {
    name.rsplit(".", 1)[1]: name for name in (*EVENT_SCHEMAS.values(), *RECORD_SCHEMAS.values())
}


class Codec:
    """Encodes and decodes framed Avro through one registry; schemas parsed once and cached."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or FileRegistry()
        self._ids: dict[str, int] = {}
        self._readers: dict[int, tuple[Any, Any, str]] = {}

    def encode(self, full_name: str, record: Mapping[str, Any]) -> bytes:
        """Frame and encode `record` with the schema `full_name`."""
        schema_id = self._ids.get(full_name)
        if schema_id is None:
            schema_id = self._ids[full_name] = self.registry.id_for(
                full_name, raw_schema(full_name)
            )
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(buffer, parsed(full_name), record)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SchemaError(f"{full_name}: cannot encode ({exc})") from None
        return buffer.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(current full record name, record) of framed Avro bytes; SchemaError if unreadable."""
        if len(data) < _HEADER.size:
            raise SchemaError(f"truncated: {len(data)} bytes is shorter than the 5-byte header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise SchemaError(f"bad magic byte {magic} (not the Confluent wire format)")
        reader = self._readers.get(schema_id)
        if reader is None:
            writer_raw = self.registry.schema_for(schema_id)
            family = writer_raw["name"]
            current = _CURRENT.get(family)
            if current is None:
                raise SchemaError(f"schema id {schema_id} ({family}) is not a leadflow record")
            writer_schema = fastavro.parse_schema(writer_raw)
            reader_schema = parsed(current)
            # the same schema: no resolution needed (~20 % of a decode)
            same = writer_schema == reader_schema
            reader = self._readers[schema_id] = (
                writer_schema,
                None if same else reader_schema,
                current,
            )
        writer_schema, reader_schema, name = reader
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[_HEADER.size :]), writer_schema, reader_schema
            )
        except (
            EOFError,
            StopIteration,
            ValueError,
            IndexError,
            UnicodeDecodeError,
            SchemaResolutionError,
        ) as exc:
            raise SchemaError(
                f"undecodable Avro for schema id {schema_id}: {exc.__class__.__name__}"
            ) from None
        assert isinstance(record, dict)
        return name, record


_default = Codec()


def encode_event(obj: Mapping[str, Any], codec: Codec | None = None) -> bytes:
    """Canonical JSON event → framed Avro (SchemaError names the problem)."""
    event_type = obj.get("event_type")
    name = EVENT_SCHEMAS.get(event_type) if isinstance(event_type, str) else None
    if name is None:
        raise SchemaError(f"event_type: unknown value {event_type!r}")
    validate_event(obj)
    return (codec or _default).encode(name, obj)


def decode_event(data: bytes, codec: Codec | None = None) -> dict[str, Any]:
    """Framed Avro → canonical JSON event (optional fields that are null are left out)."""
    if len(data) > MAX_EVENT_BYTES:
        raise SchemaError(f"oversized: {len(data)} bytes > {MAX_EVENT_BYTES}")
    name, record = (codec or _default).decode(data)
    if name not in EVENT_SCHEMAS.values():
        raise SchemaError(f"{name} is an output record, not an input event")
    optional = _optional_fields(name)
    return {k: v for k, v in record.items() if v is not None or k not in optional}


def encode_record(kind: str, record: Mapping[str, Any], codec: Codec | None = None) -> bytes:
    """An output record's `as_dict()` → framed Avro."""
    name = RECORD_SCHEMAS.get(kind)
    if name is None:
        raise SchemaError(f"unknown output record kind {kind!r}; one of {sorted(RECORD_SCHEMAS)}")
    return (codec or _default).encode(name, record)


def decode_record(data: bytes, codec: Codec | None = None) -> dict[str, Any]:
    """Framed Avro → output record dict (as `as_dict()` gave it)."""
    return (codec or _default).decode(data)[1]


def validate_event(obj: Mapping[str, Any]) -> None:
    """Check a canonical JSON event against its Avro schema; SchemaError names the field."""
    event_type = obj.get("event_type")
    name = EVENT_SCHEMAS.get(event_type) if isinstance(event_type, str) else None
    if name is None:
        raise SchemaError(f"event_type: unknown value {event_type!r}")
    schema = raw_schema(name)
    fields = {f["name"]: f for f in schema["fields"]}
    for key in obj:
        if key not in fields:
            raise SchemaError(f"{key}: not a field of {event_type} (written by a newer schema?)")
    for field in schema["fields"]:
        value = obj.get(field["name"])
        if value is None:
            if "default" not in field:
                raise SchemaError(f"{field['name']}: missing")
            continue
        if not _matches(field["type"], value):
            raise SchemaError(f"{field['name']}: wrong type {type(value).__name__}")
    event_id = obj.get("event_id")
    if isinstance(event_id, str) and len(event_id) > 128:
        raise SchemaError("event_id: longer than 128 characters")


def _matches(avro_type: Any, value: Any) -> bool:
    if isinstance(avro_type, list):
        return any(_matches(t, value) for t in avro_type if t != "null")
    if isinstance(avro_type, dict) and avro_type.get("type") == "map":
        return isinstance(value, dict) and all(
            isinstance(k, str) and _matches(avro_type["values"], v) for k, v in value.items()
        )
    if avro_type == "string":
        return isinstance(value, str)
    if avro_type == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if avro_type == "double":
        return isinstance(value, float | int) and not isinstance(value, bool)
    return False


@functools.cache
def _optional_fields(name: str) -> frozenset[str]:
    return frozenset(f["name"] for f in raw_schema(name)["fields"] if "default" in f)
