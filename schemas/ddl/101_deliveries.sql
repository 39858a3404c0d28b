-- Delivery of workflow notifications (integrations/delivery.py, docs/integrations.md). Version 101.
-- deliveries: one row per attempt's outcome, as on the deliveries topic: 'delivered', 'failed' (to be
-- retried) or 'dead' (dead-lettered with its reason). A Kafka replay writes the same (tenant, id,
-- attempt, outcome) again: ReplacingMergeTree keeps one.
CREATE TABLE IF NOT EXISTS {database}.deliveries
(
    ts               DateTime64(3, 'UTC'),
    tenant           LowCardinality(String),
    id               String,
    workflow         String,
    receiver         String,
    receiver_type    LowCardinality(String),
    kind             LowCardinality(String),
    incident_id      String,
    attempt          UInt32,
    outcome          LowCardinality(String),
    status           Int32,
    reason           String,
    source_ts        DateTime64(3, 'UTC'),
    created_ts       DateTime64(3, 'UTC'),
    first_attempt_ts DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY (tenant, id, attempt, outcome)
;
