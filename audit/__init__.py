"""The tamper-evident audit trail (issue #11, items 1-3): ``audit/1`` events from the ``audit``
topic, deduplicated by id, hash-chained per tenant, checkpointed as Ed25519-signed RFC 9162
Merkle tree heads, and the proofs an outside auditor checks. See ``docs/audit.md``."""
