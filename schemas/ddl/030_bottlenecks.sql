-- Results of the periodic bottleneck job (streams/bottleneck_job.py, traces.analysis): per run
-- and entry service, the ranked operations that own end-to-end latency (kind 'bottleneck') and
-- the rules that fired (kind 'suggestion'). The same report goes to the bottlenecks topic as JSON.
-- A run is identified by (entry_service, analyzed_at); re-running the same insert collapses.
CREATE TABLE IF NOT EXISTS {database}.bottlenecks
(
    analyzed_at    DateTime64(3, 'UTC'),
    entry_service  LowCardinality(String),   -- the service whose traces were analysed
    window_seconds UInt32,
    traces         UInt32,                   -- traces in the window
    mean_ms        Float64,                  -- their mean end-to-end latency
    kind           LowCardinality(String),   -- 'bottleneck' or 'suggestion'
    rank           UInt16,                   -- 1 = largest share (bottlenecks); rule order (suggestions)
    service        LowCardinality(String),
    operation      String,
    share          Float64,                  -- of the window's end-to-end latency (bottlenecks)
    critical_ms    Float64,                  -- critical-path self time per trace (bottlenecks)
    on_path_traces UInt32,                   -- traces with the operation on the critical path
    rule           LowCardinality(String),   -- n_plus_one, slow_database, ... (suggestions)
    message        String,
    evidence       Map(String, Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(analyzed_at)
ORDER BY (entry_service, analyzed_at, kind, rank)
