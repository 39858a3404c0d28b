-- Anchors for verifying an audit trail whose oldest events retention deleted (audit/verify.py,
-- docs/audit.md "Retention"). Version 112.
-- Every signed tree head also keeps what the events it covers are needed for later: `frontier`,
-- the roots of the tree's perfect subtrees (hex, leftmost first, 64 digits each; their fold is
-- the signed root, so they cannot be changed unseen), and `chain_hash`, the hash of its last
-- event. From the oldest head kept, verification continues as if the events before it were there.
ALTER TABLE {database}.audit_checkpoints ADD COLUMN IF NOT EXISTS frontier String DEFAULT ''
;
ALTER TABLE {database}.audit_checkpoints ADD COLUMN IF NOT EXISTS chain_hash String DEFAULT ''
;
-- The trail's TTL rule changes whenever its horizon moves (compliance/retention.py): re-materializing
-- it then only recalculates the parts' TTL information, and the TTL merges delete (no part rewrite).
ALTER TABLE {database}.audit_log MODIFY SETTING materialize_ttl_recalculate_only = 1
;
ALTER TABLE {database}.audit_checkpoints MODIFY SETTING materialize_ttl_recalculate_only = 1
