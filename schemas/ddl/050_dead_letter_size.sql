-- The full size of a dead-lettered record: its dead letter keeps at most max_payload_bytes of it.
ALTER TABLE {database}.dead_letters ADD COLUMN IF NOT EXISTS payload_bytes UInt64 DEFAULT length(payload)
