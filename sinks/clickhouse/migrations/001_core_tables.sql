-- leadflow core tables. SQL kept in the subset ClickHouse 18.16 and current releases both accept.
-- Re-delivered rows collapse by key (ReplacingMergeTree); queries dedupe with FINAL.

CREATE TABLE IF NOT EXISTS events_raw (
    event_id String,
    event_type String,
    lead_id String,
    anonymous_id Nullable(String),
    occurred_at DateTime,
    source String,
    payload String,
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (lead_id, event_id);

CREATE TABLE IF NOT EXISTS transitions (
    record_id String,
    lead_id String,
    from_stage Nullable(String),
    to_stage String,
    at DateTime,
    event_id String,
    skipped_stages Array(String),
    episode UInt16,
    reason Nullable(String),
    owner_id Nullable(String),
    team_id Nullable(String),
    definitions_version String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (lead_id, record_id);

CREATE TABLE IF NOT EXISTS lead_state (
    record_id String,
    lead_id String,
    stage String,
    episode UInt16,
    score Int32,
    fit_score Int32,
    engagement_score Int32,
    owner_id Nullable(String),
    team_id Nullable(String),
    source Nullable(String),
    first_channel Nullable(String),
    first_campaign_id Nullable(String),
    created_at Nullable(DateTime),
    stage_entered_at DateTime,
    updated_at DateTime,
    erased UInt8,
    merged_into Nullable(String),
    version UInt64,
    definitions_version String
) ENGINE = ReplacingMergeTree(version)
ORDER BY lead_id;

CREATE TABLE IF NOT EXISTS sla (
    record_id String,
    instance_id String,
    lead_id Nullable(String),
    policy String,
    event String,
    status String,
    started_at DateTime,
    due_at DateTime,
    warn_at Nullable(DateTime),
    breach_at Nullable(DateTime),
    met_at Nullable(DateTime),
    breached_at Nullable(DateTime),
    warned_at Nullable(DateTime),
    escalated_at Nullable(DateTime),
    corrected_at Nullable(DateTime),
    owner_id Nullable(String),
    team_id Nullable(String),
    escalate_to Nullable(String),
    business_seconds Nullable(Int64),
    target Nullable(Int64),
    actual Nullable(Int64),
    at DateTime,
    definitions_version String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (policy, instance_id);

CREATE TABLE IF NOT EXISTS attribution (
    record_id String,
    lead_id String,
    opportunity_id String,
    trigger String,
    trigger_at DateTime,
    model String,
    touch_event_id Nullable(String),
    touch_at Nullable(DateTime),
    channel String,
    campaign_id Nullable(String),
    weight Float64,
    credit_minor Int64,
    amount_minor Int64,
    currency String,
    definitions_version String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(trigger_at)
ORDER BY (opportunity_id, trigger, model, record_id);

CREATE TABLE IF NOT EXISTS dead_letters (
    record_id String,
    reason String,
    error_class String,
    raw String,
    line Nullable(UInt64),
    source_topic Nullable(String),
    source_partition Nullable(Int32),
    source_offset Nullable(Int64),
    at Nullable(DateTime),
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY record_id;
