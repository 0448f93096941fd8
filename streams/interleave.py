"""Arrival orders of one event stream as upstream systems produce them, and the final truth.

Marketing automation, web and CRM publish to their own topics on their own schedules: a topic
keeps its own order but the topics interleave arbitrarily, and a consumer catching up reads
long single-topic stretches. `interleavings` draws such orders of a JSON Lines stream; `truth`
replays one and returns what downstream holds once retractions are applied, in a form two runs
can be compared with (the fields that are facts of event time; not revisions, record ids of SLA
changes or `corrected_at`, which say when the pipeline learned something).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from streams.core.definitions import Definitions
from streams.replay import Replayer
from streams.topics import TOPIC_OF_EVENT_TYPE


def topic_of(line: bytes) -> str:
    """The input topic a line goes to (bad lines: a topic of their own)."""
    try:
        return TOPIC_OF_EVENT_TYPE.get(str(orjson.loads(line).get("event_type")), "bad")
    except (orjson.JSONDecodeError, AttributeError):
        return "bad"


def by_topic(lines: Iterable[bytes]) -> dict[str, list[bytes]]:
    """The lines of each topic, in their order."""
    topics: dict[str, list[bytes]] = {}
    for line in lines:
        if line.strip():
            topics.setdefault(topic_of(line), []).append(line)
    return topics


def interleave(topics: dict[str, list[bytes]], rng: random.Random, stretch: int) -> list[bytes]:
    """One arrival order: each topic's order kept, the topics merged in random runs of up to
    `stretch` records (1: fine-grained skew; large: catch-up reads)."""
    queues = {name: list(reversed(lines)) for name, lines in topics.items() if lines}
    out: list[bytes] = []
    while queues:
        name = rng.choice(sorted(queues))
        queue = queues[name]
        for _ in range(rng.randint(1, stretch)):
            if not queue:
                break
            out.append(queue.pop())
        if not queue:
            del queues[name]
    return out


def delayed(lines: list[bytes], rng: random.Random, fraction: float, by: int) -> list[bytes]:
    """`lines` with a `fraction` of the activities (CRM sync lag) moved up to `by` places later."""
    out = list(lines)
    for index in range(len(out) - 1, -1, -1):
        if topic_of(out[index]) == "activities" and rng.random() < fraction:
            line = out.pop(index)
            out.insert(min(len(out), index + rng.randint(1, by)), line)
    return out


def interleavings(lines: list[bytes], seed: int, count: int) -> Iterator[list[bytes]]:
    """`count` arrival orders of `lines` (a mix of skews and catch-up stretches)."""
    rng = random.Random(seed)
    topics = by_topic(lines)
    for i in range(count):
        yield interleave(topics, rng, stretch=(1, 50, 5000)[i % 3])


def replay_lines(lines: Iterable[bytes], defs: Definitions, until: datetime | None) -> Replayer:
    """A replayer fed `lines` (advanced to `until`)."""
    replayer = Replayer(defs)
    for line_no, raw in enumerate(lines, start=1):
        replayer.feed_line(line_no, raw)
    if until is not None:
        replayer.advance(until)
    return replayer


_SLA_FACTS = (
    "lead_id",
    "policy",
    "status",
    "started_at",
    "due_at",
    "met_at",
    "breached_at",
    "warned_at",
    "escalated_at",
    "owner_id",
    "target",
    "actual",
)
_TRANSITION_FACTS = ("lead_id", "from_stage", "to_stage", "at", "event_id", "episode", "reason")
_CREDIT_FACTS = ("lead_id", "opportunity_id", "trigger", "model", "touch_event_id", "credit_minor")
_STATE_FACTS = ("stage", "episode", "score", "owner_id", "team_id", "erased", "merged_into")


def facts(
    transitions: Iterable[dict[str, Any]],
    sla: Iterable[dict[str, Any]],
    credits: Iterable[dict[str, Any]],
    states: Iterable[dict[str, Any]],
) -> dict[str, set[tuple[Any, ...]]]:
    """Final outputs as comparable sets (record dicts as replay files and topics hold them)."""
    return {
        "transitions": {tuple(r[f] for f in _TRANSITION_FACTS) for r in transitions},
        "sla": {(r["instance_id"], *(r[f] for f in _SLA_FACTS)) for r in sla},
        "credits": {tuple(r[f] for f in _CREDIT_FACTS) for r in credits},
        "lead_states": {(r["lead_id"], *(r[f] for f in _STATE_FACTS)) for r in states},
    }


def truth(replayer: Replayer) -> dict[str, set[tuple[Any, ...]]]:
    """The final facts of a replayer."""
    return facts(
        (r.as_dict() for r in replayer.transitions.values()),
        (r.as_dict() for r in replayer.sla_latest.values()),
        (r.as_dict() for r in replayer.credits.values()),
        (r.as_dict() for r in replayer.lead_latest().values()),
    )


def differences(want: dict[str, set[Any]], got: dict[str, set[Any]]) -> dict[str, int]:
    """Per output kind, how many facts differ (symmetric difference)."""
    return {kind: len(want[kind] ^ got[kind]) for kind in want if want[kind] != got[kind]}
