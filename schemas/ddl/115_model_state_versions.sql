-- Two versions of each series' checkpoint (sinks/state_versions.py). Version 115.
-- A checkpoint is written before its offsets are committed; a worker killed in between left state
-- newer than its commit, and the next owner replayed records against models that had learned them.
-- Each row now says which of a series' two slots it fills and its cut (the offset of its partition
-- it covers), so a write never replaces the version the commit covers. Rows written before keep
-- slot 0 and cut 0 (always restorable), as before.
ALTER TABLE {database}.model_state ADD COLUMN slot UInt8, ADD COLUMN cut UInt64 DEFAULT 0,
    MODIFY ORDER BY (detector, series, slot)
