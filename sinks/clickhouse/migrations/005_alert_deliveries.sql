-- Alert messages the notifier gave up on (retries exhausted, refused, endpoint disabled) and what
-- `leadflow alerts replay` did with them. One row per change; the highest version wins (FINAL).
-- SQL kept in the subset ClickHouse 18.16 and current releases both accept.

CREATE TABLE IF NOT EXISTS alert_deliveries (
    message_id String,
    endpoint String,
    format String,
    status String,
    attempts UInt32,
    last_status_code Nullable(Int32),
    last_response String,
    alert_ids Array(String),
    kinds Array(String),
    lead_ids Array(String),
    instance_ids Array(String),
    first_attempt_at DateTime,
    last_attempt_at DateTime,
    body String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(first_attempt_at)
ORDER BY (endpoint, message_id);
