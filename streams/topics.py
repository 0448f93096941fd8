"""Every Kafka topic leadflow uses, with partitions and configs: the one place topic names live."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TOUCHES = "leadflow.touches"
ACTIVITIES = "leadflow.activities"
LEADS = "leadflow.leads"

TRANSITIONS = "leadflow.transitions"
SLA = "leadflow.sla"
ATTRIBUTION = "leadflow.attribution"
LEAD_STATE = "leadflow.lead-state"
DLQ = "leadflow.dlq"

INPUT_TOPICS = (TOUCHES, ACTIVITIES, LEADS)
INPUT_FORMATS = ("avro", "json")


def input_formats(spec: str) -> dict[str, str]:
    """Each input topic's format from `--input-format`: `avro` or `json` for all, or a default
    then per-topic overrides by short or full name, e.g. `avro,touches=json`. ValueError names
    the part that is wrong."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts or parts[0] not in INPUT_FORMATS:
        raise ValueError(f"{spec!r}: must start with avro or json (the default of every topic)")
    formats = dict.fromkeys(INPUT_TOPICS, parts[0])
    short = {name.removeprefix("leadflow."): name for name in INPUT_TOPICS}
    for part in parts[1:]:
        topic, _, fmt = part.partition("=")
        name = short.get(topic.strip(), topic.strip())
        if name not in formats or fmt.strip() not in INPUT_FORMATS:
            raise ValueError(
                f"{part!r}: expected <topic>=avro|json with a topic of {sorted(short)}"
            )
        formats[name] = fmt.strip()
    return formats


# Record header with the produce order across the input topics (see streams/ordering.py).
SEQ_HEADER = "leadflow-seq"


def seq_header(run_started_ns: int, line_no: int) -> tuple[str, bytes]:
    """The header `leadflow produce` puts on record `line_no` of a run started at `run_started_ns`."""
    return SEQ_HEADER, run_started_ns.to_bytes(8, "big") + line_no.to_bytes(8, "big")


# Record header with the event-time clock of the producing run before this record: the largest
# occurred_at of the records before it, as replay's clock before that line (DESIGN.md §6).
# Backfill fires SLA timers by it before applying the record, so each event meets the timers
# replay had fired by then, however the partitions are spread over workers and wherever a
# restart resumes.
CLOCK_HEADER = "leadflow-clock"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clock_header(clock: datetime) -> tuple[str, bytes]:
    """The clock header: microseconds since the epoch, 8 bytes big-endian, signed."""
    micros = (clock - _EPOCH) // timedelta(microseconds=1)
    return CLOCK_HEADER, micros.to_bytes(8, "big", signed=True)


def producer_clock(headers: Any) -> datetime | None:
    """The clock header's instant among a record's `headers` ((name, bytes) pairs), or None."""
    for name, value in headers or ():
        if name == CLOCK_HEADER and len(value) == 8:
            micros = int.from_bytes(value, "big", signed=True)
            return _EPOCH + timedelta(microseconds=micros)
    return None


OUTPUT_TOPICS = (TRANSITIONS, SLA, ATTRIBUTION, LEAD_STATE)

# event_type -> input topic (DESIGN.md §5)
TOPIC_OF_EVENT_TYPE: dict[str, str] = {
    "touch": TOUCHES,
    "lead_created": LEADS,
    "lead_updated": LEADS,
    "owner_assigned": LEADS,
    "lead_identified": LEADS,
    "lead_merged": LEADS,
    "lead_erased": LEADS,
    "activity": ACTIVITIES,
    "lead_accepted": ACTIVITIES,
    "lead_qualified": ACTIVITIES,
    "lead_rejected": ACTIVITIES,
    "opportunity_created": ACTIVITIES,
    "deal_won": ACTIVITIES,
    "deal_lost": ACTIVITIES,
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: its name, partition count and topic configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


# Internal: events re-keyed by lead (anonymous stitching, merges) between the pipeline's agents.
LEAD_EVENTS = "leadflow.internal.lead-events"
INTERNAL_TOPICS = (LEAD_EVENTS,)

# Tansu stores but never applies retention; some clients need retention.ms described (INFRA.md).
_INPUT_CONFIGS = {"retention.ms": str(7 * 24 * 3600 * 1000), "cleanup.policy": "delete"}
_OUTPUT_CONFIGS = {"retention.ms": str(7 * 24 * 3600 * 1000), "cleanup.policy": "delete"}
_DLQ_CONFIGS = {"retention.ms": str(30 * 24 * 3600 * 1000), "cleanup.policy": "delete"}


def topic_specs(partitions: int) -> tuple[TopicSpec, ...]:
    """Every topic leadflow creates; lead-keyed topics share one partition count (co-partitioned)."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return (
        *(TopicSpec(name, partitions, dict(_INPUT_CONFIGS)) for name in INPUT_TOPICS),
        *(TopicSpec(name, partitions, dict(_OUTPUT_CONFIGS)) for name in OUTPUT_TOPICS),
        TopicSpec(DLQ, 1, dict(_DLQ_CONFIGS)),
        *(TopicSpec(name, partitions, dict(_OUTPUT_CONFIGS)) for name in INTERNAL_TOPICS),
    )
