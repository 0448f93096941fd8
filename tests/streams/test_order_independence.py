"""One truth however the upstream systems sync: the final outputs do not depend on arrival order.

Given a generated stream (duplicates, anonymous touches identified later, merges, erasures,
late CRM events), when its three topics are re-interleaved (each topic's own order kept; fine
skew, and catch-up reads of long single-topic stretches), CRM activities are delayed, records
are re-delivered and the states go through the worker's table codec mid-stream (a restart),
then replay leaves the same transitions, SLA outcomes, attribution credits, weekly tallies and
lead states as the stream in file order.
"""

from __future__ import annotations

import io
import random
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams import table_codec
from streams.core.definitions import Definitions
from streams.definitions_file import load_definitions
from streams.generate import generate
from streams.interleave import by_topic, delayed, differences, interleave, replay_lines, truth
from streams.replay import Replayer


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return load_definitions()


@pytest.fixture(scope="module")
def lines(defs: Definitions) -> list[bytes]:
    out = io.BytesIO()
    generate(defs, out, leads=250, days=45, seed=4242, start=date(2026, 1, 5), bad_fraction=0.01)
    return out.getvalue().splitlines()


@pytest.fixture(scope="module")
def in_file_order(defs: Definitions, lines: list[bytes]) -> tuple[Replayer, dict[str, set]]:
    first = replay_lines(lines, defs, None)
    return first, truth(replay_lines(lines, defs, first.clock))


def _restarted(replayer: Replayer) -> None:
    """What a worker restart does to the state: every value through the table codec."""
    for table in (replayer.leads, replayer.anonymous):
        for key, value in table.items():
            table[key] = table_codec.loads(table_codec.dumps(value))  # type: ignore[index]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    # no shrinking: a shrink of a 4,000-line arrival order takes minutes
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=True,
)
@given(
    seed=st.integers(0, 2**32 - 1),
    stretch=st.sampled_from([1, 3, 50, 5000]),
    delay_fraction=st.sampled_from([0.0, 0.2, 0.6]),
    duplicate_fraction=st.sampled_from([0.0, 0.05]),
    restart_at=st.floats(0.0, 1.0),
)
def test_any_arrival_order_gives_the_same_final_outputs(
    defs: Definitions,
    lines: list[bytes],
    in_file_order: tuple[Replayer, dict[str, set]],
    seed: int,
    stretch: int,
    delay_fraction: float,
    duplicate_fraction: float,
    restart_at: float,
) -> None:
    first, want = in_file_order
    rng = random.Random(seed)
    order = delayed(interleave(by_topic(lines), rng, stretch), rng, delay_fraction, by=400)
    if duplicate_fraction:
        for _ in range(int(len(order) * duplicate_fraction)):  # re-deliveries, a bit later
            index = rng.randrange(len(order))
            order.insert(min(len(order), index + rng.randint(1, 200)), order[index])
    replayer = Replayer(defs)
    restart = int(len(order) * restart_at)
    for line_no, raw in enumerate(order, start=1):
        if line_no == restart:
            _restarted(replayer)
        replayer.feed_line(line_no, raw)
    replayer.advance(first.clock)  # type: ignore[arg-type]
    got = truth(replayer)
    assert differences(want, got) == {}, (seed, stretch, delay_fraction, duplicate_fraction)


def test_the_check_sees_an_order_dependent_result(
    defs: Definitions, lines: list[bytes], in_file_order: tuple[Replayer, dict[str, set]]
) -> None:
    """The comparison is not vacuous: leaving out one activity changes the facts."""
    _, want = in_file_order
    activity = next(i for i, line in enumerate(lines) if b'"lead_accepted"' in line)
    fewer = lines[:activity] + lines[activity + 1 :]
    first = replay_lines(lines, defs, None)
    assert differences(want, truth(replay_lines(fewer, defs, first.clock)))


@pytest.mark.parametrize("hours_ahead", [2, 30, 24 * 40])
def test_a_clock_running_ahead_of_the_events_gives_the_same_truth(
    defs: Definitions,
    lines: list[bytes],
    in_file_order: tuple[Replayer, dict[str, set]],
    hours_ahead: int,
) -> None:
    """Live mode: the wall clock fires warnings, breaches and escalations before the CRM
    events that meet them arrive (and, 40 days ahead, drops breaches past the correction
    window); once the same clock is reached, the truth equals replay's."""
    import orjson

    from streams.core.errors import InvalidEvent
    from streams.core.events import parse_time

    first, _ = in_file_order
    assert first.clock is not None
    ahead = timedelta(hours=hours_ahead)
    want = truth(replay_lines(lines, defs, first.clock + ahead))
    replayer = Replayer(defs)
    latest = None
    for line_no, raw in enumerate(lines, start=1):
        replayer.feed_line(line_no, raw)
        try:
            at = parse_time(orjson.loads(raw)["occurred_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidEvent):
            continue
        latest = at if latest is None or at > latest else latest
        replayer.advance(latest + ahead)
    replayer.advance(first.clock + ahead)
    assert differences(want, truth(replayer)) == {}
