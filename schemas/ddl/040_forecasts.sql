-- Outputs of the forecasting agent (streams/forecast_pipeline.py, docs/forecasting.md). Version 040.
-- Every row is identified by its series, its origin `ts` (the time of the last point the model
-- had learned) and its horizon / period, so the rows written again after a crash and Kafka
-- replay collapse; read with FINAL to see each once. `created_at` is the version (newest wins).

-- Point forecasts with conformal intervals, `horizon` points after `ts`; also on the forecasts
-- topic with kind 'forecast'.
CREATE TABLE IF NOT EXISTS {database}.forecasts
(
    ts         DateTime64(3, 'UTC'),      -- origin: the last point learned
    target_ts  DateTime64(3, 'UTC'),      -- ts + horizon * mean spacing of the series
    tenant     LowCardinality(String),
    region     LowCardinality(String),
    service    LowCardinality(String),
    metric     LowCardinality(String),
    series     String,
    horizon    UInt16,                    -- steps (points) ahead
    point      Float64,
    lower      Float64,
    upper      Float64,
    coverage   Float32,                   -- nominal coverage of [lower, upper]
    model      LowCardinality(String),
    points     UInt64,                    -- points the model had learned
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, metric, series, model, ts, horizon)
;
-- Projected cost for the rest of the UTC day and month of each cost series; also on the
-- forecasts topic with kind 'cost'.
CREATE TABLE IF NOT EXISTS {database}.cost_projections
(
    ts         DateTime64(3, 'UTC'),      -- projection time: the last cost point learned
    tenant     LowCardinality(String),
    region     LowCardinality(String),
    service    LowCardinality(String),
    metric     LowCardinality(String),
    series     String,
    period     LowCardinality(String),    -- 'day' or 'month'
    until      DateTime64(3, 'UTC'),      -- end of the period
    spent      Float64,                   -- accrued in the period up to ts
    point      Float64,                   -- projected cost from ts to until
    lower      Float64,
    upper      Float64,
    total      Float64,                   -- spent + point
    coverage   Float32,
    model      LowCardinality(String),
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, metric, series, period, ts)
;
-- Replica recommendations for the window of `window_points` points after `ts`; also on the
-- recommendations topic.
CREATE TABLE IF NOT EXISTS {database}.recommendations
(
    ts                   DateTime64(3, 'UTC'),   -- decision time: the last point of a window
    window_end           DateTime64(3, 'UTC'),
    tenant               LowCardinality(String),
    region               LowCardinality(String),
    service              LowCardinality(String),
    metric               LowCardinality(String),
    series               String,
    replicas             UInt32,
    planned_load         Float64,                -- forecast peak of the next window
    current_load         Float64,                -- the value at ts
    capacity_per_replica Float64,
    headroom             Float64,
    window_points        UInt32,
    created_at           DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, region, service, metric, series, ts)
