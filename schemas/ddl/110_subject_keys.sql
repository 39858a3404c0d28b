-- Per-(tenant, data subject) data keys for crypto-shredding (compliance/subject_keys.py). Version 110.
-- One row per subject that ever had a field encrypted: `subject_ref` is a keyed HMAC of the subject
-- (never the subject itself), `key` the AES-256-GCM key (hex). Erasure (GDPR Art. 17) deletes the
-- row with a synchronous mutation and OPTIMIZE FINAL; the parts that held it become outdated and the
-- engine removes their files after `old_parts_lifetime` seconds, checked every second (the settings
-- below), so the key bytes are gone from disk within seconds, not the default eight minutes.
CREATE TABLE IF NOT EXISTS {database}.subject_keys
(
    tenant      LowCardinality(String),
    subject_ref String,
    key         String,
    created_at  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (tenant, subject_ref)
SETTINGS old_parts_lifetime = 1, cleanup_delay_period = 1, max_cleanup_delay_period = 1,
         cleanup_delay_period_random_add = 0, merge_tree_clear_old_parts_interval_seconds = 1
