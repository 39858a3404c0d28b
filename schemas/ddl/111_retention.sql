-- Legal holds (compliance/retention.py). Version 111.
-- One row per change, never replaced: the newest row of a tenant says whether it is held, and the
-- rows are the history of who held or released it, when and why. While a tenant is held, no
-- retention TTL deletes its rows (the TTL rules exclude it; see compliance/retention.py).
CREATE TABLE IF NOT EXISTS {database}.legal_holds
(
    tenant  LowCardinality(String),
    held    Bool,
    at      DateTime64(3, 'UTC'),
    actor   String,
    reason  String
)
ENGINE = MergeTree
ORDER BY (tenant, at)
