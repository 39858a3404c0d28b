-- Multi-region health decisions (regions/, issue #10). Version 091.
-- Platform data, no tenant's: neither table has a tenant column, so tenant SQL cannot read them
-- (sinks/clickhouse.py tenant_filters refuses such tables); platform admins and the dashboards can.

-- region_events: one row per region_event/1 (schemas/events.py RegionEvent), from the
-- region_events topic: a change of the shared verdict about `region`, as decided by `observer`
-- at `ts`. Each region decides for itself, so one failover gives one row per deciding region.
-- `views` holds each observer's local state of the region the verdict was computed from.
-- A Kafka replay writes the same (region, observer, ts, kind) again and collapses into it.
CREATE TABLE IF NOT EXISTS {database}.region_events
(
    ts          DateTime64(3, 'UTC'),
    region      LowCardinality(String),
    observer    LowCardinality(String),
    kind        LowCardinality(String),   -- failover | recovery | degraded
    previous    LowCardinality(String),   -- healthy | degraded | down
    state       LowCardinality(String),
    reason      String,
    views       Map(String, String),
    ingested_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (region, observer, ts, kind)
;
-- routes: the routing table's history, one row per geography whose route a new version changed
-- (the compacted `routing` topic keeps only the newest per geography). `regions` is the order
-- clients in `geo` are sent in; the newest version per geo is the current route.
CREATE TABLE IF NOT EXISTS {database}.routes
(
    geo         LowCardinality(String),
    version     UInt64,
    decided_at  DateTime64(3, 'UTC'),
    observer    LowCardinality(String),   -- the region whose router decided it
    regions     Array(String),
    ingested_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (observer, geo, version)
;
