"""Backward compatibility: every current schema reads data written with each kept earlier version."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError

from schemas.registry import AVRO_DIR, schema_files
from schemas.serde import EVENT_SCHEMAS, RECORD_SCHEMAS, decode_event

HISTORY = sorted((AVRO_DIR / "history").glob("*.avsc"))


def reads_old_data(old: dict[str, Any], new: dict[str, Any], sample: dict[str, Any]) -> bool:
    """True when `new` (reader) can read `sample` written with `old` (writer)."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), sample)
    buffer.seek(0)
    try:
        fastavro.schemaless_reader(buffer, fastavro.parse_schema(old), fastavro.parse_schema(new))
    except SchemaResolutionError:
        return False
    return True


def _sample(schema: dict[str, Any]) -> dict[str, Any]:
    values = {"string": "x", "long": 1, "double": 1.0, "boolean": True}
    out = {}
    for field in schema["fields"]:
        kind = field["type"]
        out[field["name"]] = (
            None
            if isinstance(kind, list)
            else values.get(kind, {})
            if isinstance(kind, str)
            else {}
        )
    return out


def _current_for(old: dict[str, Any]) -> dict[str, Any]:
    current = next(
        n
        for n in (*EVENT_SCHEMAS.values(), *RECORD_SCHEMAS.values())
        if n.endswith("." + old["name"])
    )
    return json.loads(schema_files()[current].read_text())


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: p.stem)
def test_current_schema_reads_each_earlier_version(path: Any) -> None:
    old = json.loads(path.read_text())
    assert reads_old_data(old, _current_for(old), _sample(old))


def test_the_check_fails_on_an_incompatible_schema() -> None:
    old = json.loads(HISTORY[0].read_text())
    incompatible = json.loads(json.dumps(_current_for(old)))
    incompatible["fields"].append({"name": "priority", "type": "long"})  # required, no default
    assert not reads_old_data(old, incompatible, _sample(old))


def test_data_framed_with_the_old_id_decodes_into_the_current_shape() -> None:
    from schemas.serde import Codec

    old_name = "io.leadflow.events.v1.Touch"
    codec = Codec()
    framed = codec.encode(
        old_name,
        {
            "event_id": "e",
            "event_type": "touch",
            "occurred_at": "2026-01-01T00:00:00Z",
            "source": "web",
            "touch_type": "ad_click",
            "channel": "email",
            "lead_id": "L1",
            "anonymous_id": None,
        },
    )
    assert decode_event(framed) == {
        "event_id": "e",
        "event_type": "touch",
        "occurred_at": "2026-01-01T00:00:00Z",
        "source": "web",
        "touch_type": "ad_click",
        "channel": "email",
        "lead_id": "L1",
    }


def test_output_records_framed_with_the_v1_id_decode_with_the_v2_defaults() -> None:
    """Records written before revisions existed read as revision 0, not deleted."""
    from schemas.serde import Codec, decode_record

    old = json.loads((AVRO_DIR / "history" / "io.leadflow.outputs.v1.Transition.avsc").read_text())
    record = _sample(old) | {"from_stage": None, "reason": None, "owner_id": None, "team_id": None}
    framed = Codec().encode("io.leadflow.outputs.v1.Transition", record)
    decoded = decode_record(framed)
    assert decoded["revision"] == 0 and decoded["deleted"] is False
