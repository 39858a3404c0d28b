-- The tamper-evident audit trail (audit/, docs/audit.md). Version 080.
-- audit_log: one row per audit/1 event, hash-chained per tenant. Append-only: a plain MergeTree,
-- never Replacing or Collapsing (an audit row is never replaced or merged away); a Kafka replay is
-- deduplicated by id before chaining, so no key needs collapsing. `event` holds the canonical
-- bytes (msgspec JSON, keys sorted) that are hashed; `id` is their RFC 9162 leaf hash (hex),
-- `hash` = SHA-256(prev_hash || event) (hex; prev_hash of seq 0 is 32 zero bytes).
-- The convenience columns are MATERIALIZED from `event`, so they can never disagree with it.
CREATE TABLE IF NOT EXISTS {database}.audit_log
(
    tenant    LowCardinality(String),
    seq       UInt64,
    id        String,
    event     String,
    prev_hash String,
    hash      String,
    ts        DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(toInt64(JSONExtractFloat(event, 'ts') * 1000)),
    actor     String MATERIALIZED JSONExtractString(event, 'actor'),
    action    LowCardinality(String) MATERIALIZED JSONExtractString(event, 'action'),
    resource  String MATERIALIZED JSONExtractString(event, 'resource'),
    outcome   LowCardinality(String) MATERIALIZED JSONExtractString(event, 'outcome'),
    INDEX id_bloom id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
ORDER BY (tenant, seq)
;
-- Signed tree heads: the RFC 9162 root of a tenant's first tree_size events, signed with Ed25519.
CREATE TABLE IF NOT EXISTS {database}.audit_checkpoints
(
    tenant     LowCardinality(String),
    tree_size  UInt64,
    root       String,                   -- hex
    ts         DateTime64(3, 'UTC'),
    key_id     String,
    signature  String                    -- hex, over audit.sth.message()
)
ENGINE = MergeTree
ORDER BY (tenant, tree_size)
;
-- Every public key that ever signed tree heads (the same history is exported as JSON for auditors).
CREATE TABLE IF NOT EXISTS {database}.audit_keys
(
    key_id       String,
    algorithm    LowCardinality(String),
    public_key   String,                 -- PEM (SubjectPublicKeyInfo)
    created_at   DateTime64(3, 'UTC'),
    retired_at   Nullable(DateTime64(3, 'UTC'))
)
ENGINE = MergeTree
ORDER BY (key_id, created_at)
