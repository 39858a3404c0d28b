-- Replication lag between regions (regions/lag.py, issue #10). Version 090.
-- Platform data, no tenant's: no tenant column, so tenant SQL cannot read it (platform admins
-- and the dashboards can). One row per region_lag/1 report: the pair source -> target as the
-- target's agent measured it at `ts` over its window (M1_LAG_WINDOW_SECONDS). Each region's
-- store holds every pair's reports (its own and the mirrored '<region>.region_lag').
-- Lags are raw (arrival on the target's clock - origin on the source's); `skew_ms` is the
-- estimated target-minus-source clock offset (NTP-style, from both directions; 0 while
-- `skew_known` = 0) and `lag_corrected_ms` = p50 - skew. NULL lags: no heartbeat in the window.
-- `offset_lag` is MirrorMaker's: records of the source's topics not yet mirrored (-1 unknown).
-- A Kafka replay writes the same (source, target, ts) again and collapses into it.
CREATE TABLE IF NOT EXISTS {database}.region_lag
(
    ts               DateTime64(3, 'UTC'),
    source           LowCardinality(String),
    target           LowCardinality(String),
    samples          UInt32,
    lag_p50_ms       Nullable(Float64),
    lag_p99_ms       Nullable(Float64),
    lag_max_ms       Nullable(Float64),
    skew_ms          Float64,
    skew_known       UInt8,
    lag_corrected_ms Nullable(Float64),
    offset_lag       Int64,
    received         UInt64,
    missing          UInt64,
    last_sequence    Int64,
    last_seen_s      Float64,
    ingested_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (source, target, ts)
;
