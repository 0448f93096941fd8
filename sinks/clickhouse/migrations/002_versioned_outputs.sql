-- Versioned outputs (results independent of arrival order, DESIGN.md §2). A late event
-- re-evaluates its lead: every transition, SLA and attribution row carries the lead's `revision`
-- (ReplacingMergeTree keeps the highest per key, so a re-delivered older row never wins) and
-- `deleted` = 1 on a retraction. The *_current views are the truth to query: FINAL first, then
-- the retracted rows dropped (a WHERE in the same SELECT as FINAL filters before collapsing and
-- would leave stale rows). The tables are rebuilt because a ReplacingMergeTree's version
-- column is part of its engine; earlier rows are kept with revision 0.

CREATE TABLE transitions_v2 (
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
    definitions_version String,
    revision UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(at)
ORDER BY (lead_id, record_id);

INSERT INTO transitions_v2 (record_id, lead_id, from_stage, to_stage, at, event_id, skipped_stages, episode, reason, owner_id, team_id, definitions_version, revision, deleted)
SELECT record_id, lead_id, from_stage, to_stage, at, event_id, skipped_stages, episode, reason, owner_id, team_id, definitions_version, 0, 0 FROM transitions;

DROP TABLE transitions;

RENAME TABLE transitions_v2 TO transitions;

CREATE TABLE attribution_v2 (
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
    definitions_version String,
    revision UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(trigger_at)
ORDER BY (opportunity_id, trigger, model, record_id);

INSERT INTO attribution_v2 (record_id, lead_id, opportunity_id, trigger, trigger_at, model, touch_event_id, touch_at, channel, campaign_id, weight, credit_minor, amount_minor, currency, definitions_version, revision, deleted)
SELECT record_id, lead_id, opportunity_id, trigger, trigger_at, model, touch_event_id, touch_at, channel, campaign_id, weight, credit_minor, amount_minor, currency, definitions_version, 0, 0 FROM attribution;

DROP TABLE attribution;

RENAME TABLE attribution_v2 TO attribution;

CREATE TABLE sla_v2 (
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
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (policy, instance_id);

INSERT INTO sla_v2 (record_id, instance_id, lead_id, policy, event, status, started_at, due_at, warn_at, breach_at, met_at, breached_at, warned_at, escalated_at, corrected_at, owner_id, team_id, escalate_to, business_seconds, target, actual, at, definitions_version, version, deleted)
SELECT record_id, instance_id, lead_id, policy, event, status, started_at, due_at, warn_at, breach_at, met_at, breached_at, warned_at, escalated_at, corrected_at, owner_id, team_id, escalate_to, business_seconds, target, actual, at, definitions_version, 0, 0 FROM sla;

DROP TABLE sla;

RENAME TABLE sla_v2 TO sla;

CREATE VIEW transitions_current AS SELECT * FROM (SELECT * FROM transitions FINAL) WHERE deleted = 0;

CREATE VIEW attribution_current AS SELECT * FROM (SELECT * FROM attribution FINAL) WHERE deleted = 0;

CREATE VIEW sla_current AS SELECT * FROM (SELECT * FROM sla FINAL) WHERE deleted = 0;
