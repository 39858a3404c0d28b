-- Subject keys stored as they are (no compression). Version 114.
-- Compressed, a key that repeats a few of its own bytes is stored partly as back-references, so a
-- scan of the store's files for the key (the erasure check of tests/compliance/test_subject_keys.py,
-- and an auditor's) can miss it while it exists, and so prove nothing once it is erased. Parts
-- written before this change keep their codec until they are merged or the key is erased.
ALTER TABLE {database}.subject_keys MODIFY COLUMN key String CODEC(NONE)
