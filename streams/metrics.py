"""Every Prometheus metric of leadflow's processes, named `leadflow_<noun>_<unit>`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SINK_ROWS = Counter("leadflow_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_RETRIES = Counter(
    "leadflow_sink_retries_total", "Insert attempts that failed because ClickHouse was unreachable"
)
SINK_REJECTED = Counter(
    "leadflow_sink_rejected_rows_total", "Rows ClickHouse refused, sent to dead_letters", ["table"]
)
SINK_BUFFERED = Gauge("leadflow_sink_buffered_rows", "Rows held in memory waiting for an insert")
SINK_CLICKHOUSE_UP = Gauge(
    "leadflow_sink_clickhouse_up", "1 when the last insert succeeded, 0 while retrying"
)
SINK_FLUSH_SECONDS = Histogram("leadflow_sink_flush_seconds", "Time to insert one batch")
