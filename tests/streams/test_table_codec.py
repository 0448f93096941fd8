"""The worker's table values (streams/table_codec.py) come back exactly as they were stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from streams import table_codec
from streams.definitions_file import load_definitions
from streams.pipeline import WeeklyState
from streams.replay import Replayer


def _typed(value: Any) -> Any:
    """`value` with every type and time zone spelled out (== alone ignores both)."""
    if isinstance(value, datetime):
        return ("datetime", value, value.tzinfo)
    if isinstance(value, Enum):
        return (type(value), value.value)
    if is_dataclass(value):
        return (type(value), tuple(_typed(getattr(value, f.name)) for f in fields(value)))
    if isinstance(value, frozenset):
        return ("frozenset", sorted(map(repr, map(_typed, value))))
    if isinstance(value, tuple):
        return (type(value), tuple(map(_typed, value)))
    if isinstance(value, Mapping):
        return (type(value), sorted((k, _typed(v)) for k, v in value.items()))
    return (type(value), value)


def _replayed(path: Path) -> Replayer:
    replayer = Replayer(load_definitions())
    for line_no, raw in enumerate(path.read_bytes().splitlines(), start=1):
        replayer.feed_line(line_no, raw)
    return replayer


def test_every_lead_and_anonymous_state_during_a_replay_round_trips(
    generated_events: Path,
) -> None:
    replayer = Replayer(load_definitions())
    with_sla = 0
    for line_no, raw in enumerate(generated_events.read_bytes().splitlines(), start=1):
        replayer.feed_line(line_no, raw)
        if line_no % 100:
            continue
        for state in [*replayer.leads.values(), *replayer.anonymous.values()]:
            back = table_codec.loads(table_codec.dumps(state))
            assert back == state
            assert _typed(back) == _typed(state)  # same types, time zones and enum members
            with_sla += bool(getattr(state, "sla", ()))
    assert with_sla  # open SLA instances were among them


def test_other_values_are_pickled_and_a_foreign_value_is_refused(generated_events: Path) -> None:
    weekly = WeeklyState(_replayed(generated_events).weekly_tally, frozenset())
    assert table_codec.loads(table_codec.dumps(weekly)) == weekly
    try:
        table_codec.loads(b"\x80\x05N.")  # a bare pickle: not written by this codec
    except ValueError as exc:
        assert "not a leadflow table value" in str(exc)
    else:
        raise AssertionError("a value without the codec's tag was accepted")
