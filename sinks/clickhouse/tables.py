"""Every ClickHouse table leadflow writes or reads: the one place table names live."""

from __future__ import annotations

MIGRATIONS = "schema_migrations"
EVENTS = "events_raw"
TRANSITIONS = "transitions"
LEAD_STATE = "lead_state"
SLA = "sla"
ATTRIBUTION = "attribution"
DEAD_LETTERS = "dead_letters"
# the current truth of the versioned tables: latest revision per key, retractions dropped
TRANSITIONS_CURRENT = "transitions_current"
SLA_CURRENT = "sla_current"
ATTRIBUTION_CURRENT = "attribution_current"
ALERT_DELIVERIES = "alert_deliveries"  # sinks/webhooks/deliveries.py

# output record kind (streams.core.records.OutputKind / replay file) -> table
TABLE_OF_KIND = {
    "transition": TRANSITIONS,
    "sla": SLA,
    "attribution": ATTRIBUTION,
    "lead_state": LEAD_STATE,
    "dead_letter": DEAD_LETTERS,
}
# tables that can hold a lead's personal data: erasure deletes the lead's rows there
PERSONAL_DATA_TABLES = (EVENTS,)
