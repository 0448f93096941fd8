"""Avro contract: JSON ⇄ Avro round trips for every event type, output records, wire format."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.registry import FileRegistry, SchemaError, schema_files
from schemas.serde import (
    EVENT_SCHEMAS,
    RECORD_SCHEMAS,
    decode_event,
    decode_record,
    encode_event,
    encode_record,
)
from streams.core.events import (
    _FIELDS,
    ACTIVITY_TYPES,
    CHANNELS,
    REJECT_REASONS,
    TOUCH_TYPES,
    event_to_json,
    parse_event,
)
from streams.core.records import SlaEvent, SlaRecord, SlaStatus, Transition

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
ids = st.from_regex(r"[a-z0-9\-]{1,40}", fullmatch=True)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
SPECIAL: dict[str, Any] = {
    "touch_type": st.sampled_from(sorted(TOUCH_TYPES)),
    "channel": st.sampled_from(sorted(CHANNELS)),
    "activity_type": st.sampled_from(sorted(ACTIVITY_TYPES)),
    "currency": st.sampled_from(["EUR", "USD", "GBP"]),
    "amount": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
    "attributes": st.dictionaries(
        ids,
        st.one_of(
            text, st.integers(-(2**62), 2**62), st.floats(allow_nan=False, allow_infinity=False)
        ),
        max_size=4,
    ),
}


@st.composite
def events(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    required, optional = _FIELDS[event_type]
    obj: dict[str, Any] = {
        "event_id": draw(ids),
        "event_type": event_type,
        "source": draw(text),
        "occurred_at": draw(instants).isoformat(),
    }
    for field in required:
        obj[field] = draw(SPECIAL.get(field, ids))
    for field in optional:
        if draw(st.booleans()):
            obj[field] = draw(SPECIAL.get(field, ids))
    if event_type == "lead_rejected":
        obj["reason"] = draw(st.sampled_from(sorted(REJECT_REASONS)))
    if event_type == "touch" and not (obj.get("lead_id") or obj.get("anonymous_id")):
        obj["lead_id"] = draw(ids)
    if "amount" in obj and "currency" not in obj:
        obj["currency"] = "EUR"
    return obj


@pytest.mark.parametrize("event_type", sorted(EVENT_SCHEMAS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_json_avro_json_round_trip(event_type: str, data: st.DataObject) -> None:
    canonical = event_to_json(parse_event(data.draw(events(event_type))))
    framed = encode_event(canonical)
    assert framed[0] == 0
    assert decode_event(framed) == canonical


def _transition() -> Transition:
    return Transition(
        "r1",
        "L1",
        None,
        "inquiry",
        datetime(2026, 1, 1, tzinfo=UTC),
        "e1",
        ("mql",),
        1,
        None,
        "rep",
        "emea",
        "v1",
    )


def test_output_records_round_trip() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    sla = SlaRecord(
        "r",
        "i",
        "L1",
        "p",
        SlaEvent.MET,
        SlaStatus.MET,
        at,
        at,
        None,
        at,
        at,
        None,
        None,
        None,
        None,
        "o",
        "emea",
        None,
        60,
        None,
        None,
        at,
        "v1",
    )
    for kind, record in (("transition", _transition()), ("sla", sla)):
        assert decode_record(encode_record(kind, record.as_dict())) == record.as_dict()


def test_wire_format_errors_are_readable() -> None:
    good = encode_record("transition", _transition().as_dict())
    with pytest.raises(SchemaError, match="magic byte"):
        decode_record(b"\x01" + good[1:])
    with pytest.raises(SchemaError, match="unknown schema id"):
        decode_record(struct.pack(">bI", 0, 999) + good[5:])
    with pytest.raises(SchemaError, match="truncated"):
        decode_record(good[:3])
    with pytest.raises(SchemaError, match="undecodable"):
        decode_record(good[:9])


def test_every_schema_file_is_in_the_manifest_with_a_unique_id() -> None:
    ids = FileRegistry().subjects()
    assert set(schema_files()) == set(ids)
    assert len(set(ids.values())) == len(ids)
    for name in (*EVENT_SCHEMAS.values(), *RECORD_SCHEMAS.values()):
        raw = json.loads(schema_files()[name].read_text())
        assert f"{raw['namespace']}.{raw['name']}" == name
        assert ".v" in raw["namespace"], "names are versioned"


def test_output_schemas_mirror_the_record_fields() -> None:
    from dataclasses import fields

    from streams.core import records

    classes = {
        "transition": records.Transition,
        "sla": records.SlaRecord,
        "attribution": records.AttributionCredit,
        "lead_state": records.LeadStateSnapshot,
        "dead_letter": records.DeadLetter,
    }
    for kind, cls in classes.items():
        avro = [
            f["name"]
            for f in json.loads(schema_files()[RECORD_SCHEMAS[kind]].read_text())["fields"]
        ]
        assert avro == [f.name for f in fields(cls)], (
            f"{kind}: schemas/avro/outputs does not match streams/core/records.py; add the field to the .avsc "
            "(nullable with a default) and keep old fields"
        )
