"""Inclusion and consistency proofs as JSON documents an outside auditor can check alone.

An inclusion proof (:func:`prove`) holds the event's canonical bytes, its leaf index, the
RFC 9162 path to the root of a signed tree head, the head and the id of the key that signed
it. :func:`check_inclusion` needs only that document and the public key (PEM): it recomputes
the leaf hash from the event, checks the head's signature and runs RFC 9162 §2.1.3.2.
"""

from __future__ import annotations

from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from audit import log
from audit.keys import key_id
from audit.merkle import consistency_proof, inclusion_proof, leaf_hash, tree_hash, verify_consistency, verify_inclusion
from audit.sth import TreeHead, verify as signature_ok
from sinks.clickhouse import Store


class ProofUnavailable(LookupError):
    """No proof can be made (unknown event, no signed head covers it yet, sizes out of range)."""


def _leaves(store: Store, tenant: str, size: int) -> list[bytes]:
    return log.columns(store, tenant, ("id",), until_seq=size)["id"]


def prove(store: Store, event_id: str, tenant: str | None = None) -> dict[str, Any]:
    """The inclusion proof of the event ``event_id`` (of ``tenant``, if given) against the newest
    signed head covering it."""
    found = log.find(store, event_id)
    if found is None or tenant is not None and found[0] != tenant:
        raise ProofUnavailable(f"no audit event {'of ' + tenant + ' ' if tenant else ''}has id {event_id}")
    tenant, seq = found
    heads = [h for h in log.heads(store, tenant) if h.tree_size > seq]
    if not heads:
        raise ProofUnavailable(f"event seq {seq} of {tenant} is not covered by a signed tree head yet "
                               "(one is made every M1_AUDIT_CHECKPOINT_EVENTS events or M1_AUDIT_CHECKPOINT_SECONDS)")
    head = heads[-1]
    leaves = _leaves(store, tenant, head.tree_size)
    event = log.columns(store, tenant, ("event",), since_seq=seq, until_seq=seq + 1)["event"][0]
    return {"event": event.decode(), "id": event_id, "tenant": tenant, "leaf_index": seq, "tree_size": head.tree_size,
            "inclusion_path": [p.hex() for p in inclusion_proof(leaves, seq)],
            "tree_head": msgspec.to_builtins(head), "key_id": head.key_id}


def check_inclusion(proof: dict[str, Any], public_pem: str) -> str | None:
    """``None`` when ``proof`` holds (see the module docstring), else why not."""
    public = load_pem_public_key(public_pem.encode())
    if not isinstance(public, Ed25519PublicKey):
        return "the public key is not an Ed25519 key"
    try:
        head = msgspec.convert(proof["tree_head"], TreeHead)
        leaf = leaf_hash(proof["event"].encode())
        path = [bytes.fromhex(p) for p in proof["inclusion_path"]]
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
    except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
        return f"malformed proof: {exc}"
    if not signature_ok(head, {key_id(public): public_pem}):
        return f"the tree head is not signed by this key (it names key {head.key_id}, this is {key_id(public)})"
    if leaf.hex() != proof.get("id"):
        return "the event's leaf hash is not the id the proof names"
    if size != head.tree_size or not verify_inclusion(index, size, leaf, path, bytes.fromhex(head.root)):
        return "the inclusion path does not lead from the event to the signed root"
    return None


def consistency(store: Store, tenant: str, first: int, second: int) -> dict[str, Any]:
    """The RFC 9162 consistency proof between the tenant's trees of ``first`` and ``second``
    leaves, with both roots, the signed heads at those sizes (if any) and whether it verifies."""
    leaves = _leaves(store, tenant, second)
    if not 0 < first <= second <= len(leaves):
        raise ProofUnavailable(f"sizes must satisfy 0 < from <= to <= {len(leaves)} (the log's size)")
    proof = consistency_proof(leaves, first)
    roots = tree_hash(leaves[:first]), tree_hash(leaves)
    signed = {h.tree_size: msgspec.to_builtins(h) for h in log.heads(store, tenant) if h.tree_size in (first, second)}
    agree = all(signed[size]["root"] == root.hex() for size, root in zip((first, second), roots) if size in signed)
    return {"tenant": tenant, "from": first, "to": second, "from_root": roots[0].hex(), "to_root": roots[1].hex(),
            "proof": [p.hex() for p in proof], "signed_heads": list(signed.values()),
            "verified": agree and verify_consistency(first, second, roots[0], roots[1], proof)}
