"""Every Kafka topic leadflow uses, with partitions and configs: the one place topic names live."""

from __future__ import annotations

from dataclasses import dataclass, field

TOUCHES = "leadflow.touches"
ACTIVITIES = "leadflow.activities"
LEADS = "leadflow.leads"

TRANSITIONS = "leadflow.transitions"
SLA = "leadflow.sla"
ATTRIBUTION = "leadflow.attribution"
LEAD_STATE = "leadflow.lead-state"
DLQ = "leadflow.dlq"

INPUT_TOPICS = (TOUCHES, ACTIVITIES, LEADS)
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
