-- Alert workflows (workflows/, docs/workflows.md, issue #12). Version 100.
-- incidents: the latest state of each incident (anomalies of one service and region correlated in
-- time), written from the incidents topic; a replay or a later change of the same incident collapses
-- into one row (the newest updated_at wins). Read with FINAL.
CREATE TABLE IF NOT EXISTS {database}.incidents
(
    tenant       LowCardinality(String),
    id           String,
    service      LowCardinality(String),
    region       LowCardinality(String),
    title        String,
    severity     LowCardinality(String),  -- info | warning | critical (the highest seen)
    status       LowCardinality(String),  -- open | acknowledged | resolved
    started_at   DateTime64(3, 'UTC'),
    updated_at   DateTime64(3, 'UTC'),
    resolved_at  Nullable(DateTime64(3, 'UTC')),
    signals      UInt64,                  -- signals it gathered
    series       Array(String),
    labels       Map(String, String)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant, id)
;
-- incident_timeline: what happened to an incident, one row per entry (opened, joined, severity,
-- acknowledged, resolved); the same entry re-sent collapses.
CREATE TABLE IF NOT EXISTS {database}.incident_timeline
(
    tenant       LowCardinality(String),
    incident_id  String,
    ts           DateTime64(3, 'UTC'),
    kind         LowCardinality(String),
    text         String,
    details      Map(String, String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, incident_id, ts, kind)
;
-- silences: silences and maintenance windows set through the API or `m1 silences`; expiring one
-- writes it again with ends_at = now and a later version.
CREATE TABLE IF NOT EXISTS {database}.silences
(
    tenant       LowCardinality(String),
    id           String,
    kind         LowCardinality(String),  -- silence | maintenance
    starts_at    DateTime64(3, 'UTC'),
    ends_at      DateTime64(3, 'UTC'),
    matchers     String,                  -- JSON: service, region, severity, labels
    comment      String,
    created_by   String,
    version      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, id)
;
-- workflow_runs: each run's record as it reaches its declared terminal state or ends.
CREATE TABLE IF NOT EXISTS {database}.workflow_runs
(
    tenant       LowCardinality(String),
    id           String,
    workflow     LowCardinality(String),
    group_key    String,
    state        LowCardinality(String),
    terminal     LowCardinality(String),
    reached      Bool,
    started      DateTime64(3, 'UTC'),
    ts           DateTime64(3, 'UTC'),
    level        UInt16,
    history      String                   -- JSON [[ts, text], ...]
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY (tenant, id)
;
