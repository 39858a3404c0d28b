-- Core tables of the metrics path. Version 001.
-- Idempotence: every table is a ReplacingMergeTree whose ORDER BY key identifies an event,
-- so rows written again after a crash and Kafka replay collapse into one. Queries that must
-- count each event once read with FINAL (the `m1 query` docs and the dashboards do).

-- One row per metric point, with the anomaly score the detector gave it.
-- Two points of one series with the same timestamp are the same observation.
CREATE TABLE IF NOT EXISTS {database}.metric_points
(
    ts          DateTime64(3, 'UTC'),
    tenant      LowCardinality(String),
    region      LowCardinality(String),
    service     LowCardinality(String),
    metric      LowCardinality(String),
    labels      Map(String, String),
    series      String,
    value       Float64,
    score       Float32,
    is_anomaly  UInt8,
    ingested_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, metric, series, ts)
;
-- Points whose score crossed the threshold, with a severity; also sent to the anomalies topic.
CREATE TABLE IF NOT EXISTS {database}.anomalies
(
    ts          DateTime64(3, 'UTC'),
    tenant      LowCardinality(String),
    region      LowCardinality(String),
    service     LowCardinality(String),
    metric      LowCardinality(String),
    series      String,
    value       Float64,
    score       Float32,
    severity    LowCardinality(String),
    detector    LowCardinality(String),
    detected_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(detected_at)
ORDER BY (tenant, series, ts)
;
-- Rejected records: where they came from, why, and their original bytes.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    received_at DateTime64(3, 'UTC'),
    topic       LowCardinality(String),
    partition   UInt32,
    offset      UInt64,
    reason      String,
    payload     String
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (topic, partition, offset)
;
-- Checkpoints of the per-series models (pickled), newest wins.
CREATE TABLE IF NOT EXISTS {database}.model_state
(
    series     String,
    detector   LowCardinality(String),
    points     UInt64,
    state      String,
    updated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (detector, series)
