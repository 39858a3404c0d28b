-- Every replacing or aggregating key starts with the tenant. Version 070.
--
-- A ReplacingMergeTree keeps one row per sorting key and an AggregatingMergeTree merges the
-- rows of one key, so a key without the tenant lets one tenant's rows replace or merge into
-- another's. Before this version a tenant could erase another tenant's span by sending one
-- with the same TraceId, SpanId, service, span name and second (otel_traces); a bottleneck run
-- over every tenant stamps one analyzed_at on all reports, so two tenants with the same entry
-- service kept one report between them (bottlenecks); the OTel metric tables told resources
-- apart only by cityHash64(ResourceAttributes, ScopeName), a hash anyone can collide; the RED
-- rollup summed every tenant's calls of a service together (otel_red_1m), and the trace id
-- lookup merged the time ranges of every tenant's traces with the same id.
--
-- The OTel tables (the Collector exporter's columns) get `Tenant`, MATERIALIZED from
-- ResourceAttributes['tenant']: the engine fills it on every insert, from the pipeline
-- (which, with tenant topics, has set that attribute to the topic's tenant, see
-- streams/otlp_pipeline.py) or from an exporter that knows nothing of it, so it can never
-- disagree with the attribute, and `SELECT *` still returns exactly the exporter's columns.
-- It is the tenant column tenant SQL filters on (sinks/sql_guard.py TENANT_COLUMNS).
--
-- Tables already keyed by their tenant, checked: metric_points, anomalies, forecasts,
-- cost_projections, recommendations (tenant first); model_state ((detector, series): the
-- series key starts with the tenant, whose name cannot hold the '|' that ends it); access_log
-- (plain MergeTree, never merged away); dead_letters ((topic, partition, offset): a record's
-- own Kafka coordinates, which no other record shares; with tenant topics the topic is the
-- tenant's own).
--
-- How a table moves to its new key, keeping its rows: a new table `<name>_070` is filled
-- from the old one, EXCHANGE TABLES swaps the two (atomic; needs an Atomic database, which is
-- what chdb and a ClickHouse server create by default), and the old one is dropped. Every
-- step may run again after a crash part-way (the runner then applies this whole file again):
-- a leftover `<name>_070` is dropped first, and the copy reads the same columns from the old
-- or the already-moved table. The materialized views reading otel_traces are dropped first
-- and created again last, reading the new columns; the trace id lookup is rebuilt from the
-- spans. Rows written to a moved table while this runs (by another writer on a ClickHouse
-- server) are lost: stop writers for the migration; the worker migrates before it consumes.

DROP VIEW IF EXISTS {database}.otel_red_1m_mv
;
DROP VIEW IF EXISTS {database}.otel_traces_trace_id_ts_mv
;
-- otel_traces: tenant first; PRIMARY KEY as before, after the tenant.
DROP TABLE IF EXISTS {database}.otel_traces_070
;
CREATE TABLE {database}.otel_traces_070 (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Tenant LowCardinality(String) MATERIALIZED ResourceAttributes['tenant'] CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (Tenant, ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (Tenant, ServiceName, SpanName, toDateTime(Timestamp), TraceId, SpanId)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000
;
INSERT INTO {database}.otel_traces_070 SELECT * FROM {database}.otel_traces
SETTINGS max_partitions_per_insert_block = 0
;
EXCHANGE TABLES {database}.otel_traces AND {database}.otel_traces_070
;
DROP TABLE {database}.otel_traces_070
;
-- Trace id -> time range, per tenant: rebuilt from the spans (what its view would have written).
DROP TABLE IF EXISTS {database}.otel_traces_trace_id_ts_070
;
CREATE TABLE {database}.otel_traces_trace_id_ts_070 (
    Tenant LowCardinality(String) CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree
PARTITION BY toStartOfWeek(Start)
ORDER BY (Tenant, TraceId)
SETTINGS index_granularity = 8192
;
INSERT INTO {database}.otel_traces_trace_id_ts_070
SELECT Tenant, TraceId, min(Timestamp) AS Start, max(Timestamp) AS End
FROM {database}.otel_traces WHERE TraceId != '' GROUP BY Tenant, TraceId
SETTINGS max_partitions_per_insert_block = 0
;
EXCHANGE TABLES {database}.otel_traces_trace_id_ts AND {database}.otel_traces_trace_id_ts_070
;
DROP TABLE {database}.otel_traces_trace_id_ts_070
;
-- RED per tenant. Minutes stored before this version keep Tenant '' (they summed every
-- tenant): all-tenant readers (the dashboards) see the same totals, tenant SQL does not see them.
ALTER TABLE {database}.otel_red_1m ADD COLUMN IF NOT EXISTS Tenant LowCardinality(String) DEFAULT '' FIRST
;
DROP TABLE IF EXISTS {database}.otel_red_1m_070
;
CREATE TABLE {database}.otel_red_1m_070 (
    Tenant LowCardinality(String),
    ServiceName LowCardinality(String),
    SpanName LowCardinality(String),
    SpanKind LowCardinality(String),
    Minute DateTime CODEC(Delta, ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    DurationSum SimpleAggregateFunction(sum, UInt64),
    DurationQuantiles AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(Minute)
ORDER BY (Tenant, ServiceName, SpanName, SpanKind, Minute)
SETTINGS non_replicated_deduplication_window = 1000
;
INSERT INTO {database}.otel_red_1m_070 SELECT * FROM {database}.otel_red_1m
SETTINGS max_partitions_per_insert_block = 0
;
EXCHANGE TABLES {database}.otel_red_1m AND {database}.otel_red_1m_070
;
DROP TABLE {database}.otel_red_1m_070
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_traces_trace_id_ts_mv
TO {database}.otel_traces_trace_id_ts
AS SELECT
    Tenant,
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM {database}.otel_traces
WHERE TraceId != ''
GROUP BY Tenant, TraceId
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_red_1m_mv
TO {database}.otel_red_1m
AS SELECT
    Tenant,
    ServiceName,
    SpanName,
    SpanKind,
    toStartOfMinute(Timestamp) AS Minute,
    count() AS Calls,
    countIf(StatusCode = 'Error') AS Errors,
    sum(Duration) AS DurationSum,
    quantilesState(0.5, 0.9, 0.99)(Duration) AS DurationQuantiles
FROM {database}.otel_traces
GROUP BY Tenant, ServiceName, SpanName, SpanKind, Minute
;
-- OTel metrics: tenant first, and the resource and scope themselves instead of a hash of them.
DROP TABLE IF EXISTS {database}.otel_metrics_gauge_070
;
CREATE TABLE {database}.otel_metrics_gauge_070 (
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl String CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    MetricName String CODEC(ZSTD(1)),
    MetricDescription String CODEC(ZSTD(1)),
    MetricUnit String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    TimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    Exemplars Nested (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix DateTime64(9),
        Value Float64,
        SpanId String,
        TraceId String
    ) CODEC(ZSTD(1)),
    Tenant LowCardinality(String) MATERIALIZED ResourceAttributes['tenant'] CODEC(ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (Tenant, ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix), ResourceAttributes, ScopeName)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000
;
INSERT INTO {database}.otel_metrics_gauge_070 SELECT * FROM {database}.otel_metrics_gauge
SETTINGS max_partitions_per_insert_block = 0
;
EXCHANGE TABLES {database}.otel_metrics_gauge AND {database}.otel_metrics_gauge_070
;
DROP TABLE {database}.otel_metrics_gauge_070
;
DROP TABLE IF EXISTS {database}.otel_metrics_sum_070
;
CREATE TABLE {database}.otel_metrics_sum_070 (
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl String CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    MetricName String CODEC(ZSTD(1)),
    MetricDescription String CODEC(ZSTD(1)),
    MetricUnit String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    TimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    Exemplars Nested (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix DateTime64(9),
        Value Float64,
        SpanId String,
        TraceId String
    ) CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    IsMonotonic Boolean CODEC(Delta, ZSTD(1)),
    Tenant LowCardinality(String) MATERIALIZED ResourceAttributes['tenant'] CODEC(ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (Tenant, ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix), ResourceAttributes, ScopeName)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000
;
INSERT INTO {database}.otel_metrics_sum_070 SELECT * FROM {database}.otel_metrics_sum
SETTINGS max_partitions_per_insert_block = 0
;
EXCHANGE TABLES {database}.otel_metrics_sum AND {database}.otel_metrics_sum_070
;
DROP TABLE {database}.otel_metrics_sum_070
;
-- Bottleneck reports: tenant first (the column came in 061; same columns, same order).
DROP TABLE IF EXISTS {database}.bottlenecks_070
;
CREATE TABLE {database}.bottlenecks_070
(
    analyzed_at    DateTime64(3, 'UTC'),
    tenant         LowCardinality(String) DEFAULT '',
    entry_service  LowCardinality(String),
    window_seconds UInt32,
    traces         UInt32,
    mean_ms        Float64,
    kind           LowCardinality(String),
    rank           UInt16,
    service        LowCardinality(String),
    operation      String,
    share          Float64,
    critical_ms    Float64,
    on_path_traces UInt32,
    rule           LowCardinality(String),
    message        String,
    evidence       Map(String, Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(analyzed_at)
ORDER BY (tenant, entry_service, analyzed_at, kind, rank)
;
INSERT INTO {database}.bottlenecks_070 SELECT * FROM {database}.bottlenecks
SETTINGS max_partitions_per_insert_block = 0
;
EXCHANGE TABLES {database}.bottlenecks AND {database}.bottlenecks_070
;
DROP TABLE {database}.bottlenecks_070
