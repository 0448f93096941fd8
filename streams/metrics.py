"""Every Prometheus metric of leadflow's processes, named `leadflow_<noun>_<unit>`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SINK_ROWS = Counter("leadflow_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_RETRIES = Counter(
    "leadflow_sink_retries_total", "Insert attempts that failed because ClickHouse was unreachable"
)
SINK_REJECTED = Counter(
    "leadflow_sink_rejected_rows_total",
    "Records the sink could not decode, map or insert (ClickHouse or the client refused them), "
    "written to dead_letters instead",
    ["table"],
)
SINK_BUFFERED = Gauge("leadflow_sink_buffered_rows", "Rows held in memory waiting for an insert")
SINK_CLICKHOUSE_UP = Gauge(
    "leadflow_sink_clickhouse_up", "1 when the last insert succeeded, 0 while retrying"
)
SINK_FLUSH_SECONDS = Histogram("leadflow_sink_flush_seconds", "Time to insert one batch")

# The worker (`leadflow worker`, served on LEADFLOW_WORKER_METRICS_PORT). After a restart,
# re-applied input counts again (re-applied events are mostly `duplicate`).
WORKER_INPUT = Counter(
    "leadflow_worker_input_records_total",
    "Input records taken from Kafka, by outcome (applied or dead_letter)",
    ["outcome"],
)
WORKER_DUPLICATES = Counter(
    "leadflow_worker_duplicates_total",
    "Messages skipped because their event_id was already applied (among the last ids kept)",
)
WORKER_IGNORED = Counter(
    "leadflow_worker_ignored_total",
    "Messages that changed nothing for another reason (illegal move, erased lead, ...)",
    ["reason"],
)
WORKER_DEAD_LETTERS = Counter(
    "leadflow_worker_dead_letters_total", "Records sent to the dead-letter topic", ["error_class"]
)
WORKER_OUTPUT = Counter(
    "leadflow_worker_output_records_total", "Records sent to the output topics", ["topic"]
)
WORKER_BATCH_SECONDS = Histogram(
    "leadflow_worker_batch_seconds",
    "Time to apply one batch of input records and have its outputs and state acknowledged",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WORKER_SLA_DEADLINES = Gauge(
    "leadflow_worker_sla_deadlines", "Leads owned by this worker with a pending SLA deadline"
)

# Both processes: the broker lost data they rely on (streams/dataloss.py); they stop.
BROKER_DATA_LOSS = Counter(
    "leadflow_broker_data_loss_total",
    "Times this process found the broker had lost topics, records or committed offsets",
    ["process"],
)
# The alert notifier (`leadflow alerts`, served on LEADFLOW_ALERTS_METRICS_PORT). Endpoints are
# labelled by their configured name, never by URL.
ALERT_DELIVERIES = Counter(
    "leadflow_alert_deliveries_total",
    "Delivery attempts of alert messages by endpoint and outcome "
    "(sent, retry, rejected, disabled, exhausted)",
    ["endpoint", "outcome"],
)
ALERT_SUPPRESSED = Counter(
    "leadflow_alert_suppressed_total",
    "Alerts not sent because the instance had moved on (met, corrected, cancelled, ...)",
    ["reason"],
)
ALERT_PENDING_RETRIES = Gauge(
    "leadflow_alert_pending_retries", "Alert messages waiting for another delivery attempt"
)
ALERT_DELAY_SECONDS = Histogram(
    "leadflow_alert_delivery_delay_seconds",
    "From the SLA instant (warn time, deadline + grace, escalation time) to the endpoint's 2xx",
    buckets=(0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
