-- Erasure tombstones (compliance/subject_keys.py, compliance/erasure_notices.py). Version 113.
-- One row per erasure of a subject's key: the subject reference (a keyed HMAC, never the subject)
-- and when, in the server's clock. Every SubjectKeys re-reads the tombstones newer than its last
-- look at least every ERASURE_CHECK_SECONDS before using a cached key, so workers sharing one
-- ClickHouse server drop an erased key from memory within that time; an erasure waits that long
-- before it answers. No key material is here.
CREATE TABLE IF NOT EXISTS {database}.subject_key_erasures
(
    tenant      LowCardinality(String),
    subject_ref String,
    erased_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (erased_at, tenant, subject_ref)
