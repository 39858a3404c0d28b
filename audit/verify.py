"""Verify a tenant's trail: the hash chain, every signed tree head, and the last head seen before.

:func:`verify_tenant` reads the tenant's rows once and checks, in order:

1. the chain (:func:`audit.chain.verify_columns`): seq contiguous from 0, each id the leaf hash
   of its event, each prev_hash the previous hash, each hash SHA-256(prev_hash || event);
2. every signed tree head: signed by a key of the trusted history (``<key>.history.json``, never
   the table's copy), for a size the log has, with the RFC 9162 root of that many leaves;
3. the witness: the newest head a previous run verified (``M1_AUDIT_WITNESS_PATH``) must still be
   a prefix of the log. A log rolled back to an older state that is consistent in itself
   passes 1 and 2; it fails here, because it no longer holds the events that head signed.

The first problem names the first bad sequence number: exactly for a chain break; for a head
whose root does not match, the first event after the last head that did (the change is in
between); for a log shorter than a head, its first missing event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import msgspec

from audit import log
from audit.chain import GENESIS, ChainBroken, verify_columns
from audit.merkle import Frontier
from audit.sth import TreeHead, verify as signature_ok
from sinks.clickhouse import Store


@dataclass
class Report:
    """What a verification of one tenant found: events and heads checked, the first problem
    (``None``: intact) and the newest head it verified."""

    tenant: str
    events: int
    heads: int
    problem: ChainBroken | None
    newest: TreeHead | None


def verify_tenant(store: Store, tenant: str, trusted: dict[str, str], witness: TreeHead | None = None,
                  since_seq: int = 0) -> Report:
    """Verify ``tenant``'s trail (see the module docstring). With ``since_seq`` the chain is
    re-hashed from that entry on (its predecessor's hash is taken as given); earlier ids still
    enter the Merkle roots."""
    earlier = log.columns(store, tenant, ("id", "hash"), until_seq=since_seq) if since_seq else {"id": [], "hash": []}
    rows = log.columns(store, tenant, since_seq=since_seq)
    head = earlier["hash"][-1] if earlier["hash"] else GENESIS
    problem, leaves = verify_columns(rows["seq"], rows["id"], rows["event"], rows["prev_hash"], rows["hash"],
                                     len(earlier["id"]), head)
    leaves = earlier["id"] + leaves
    heads = log.heads(store, tenant)
    first_unsure, newest = 0, None
    roots = _Roots(leaves)
    for sth in [*heads, *([witness] if witness else [])]:
        bad = _head_problem(sth, trusted, roots, first_unsure, witness=sth is witness)
        if bad is not None:
            problem = bad if problem is None or bad.seq < problem.seq else problem
            break
        first_unsure = sth.tree_size
        if sth is not witness:
            newest = sth
    return Report(tenant, len(leaves), len(heads), problem, newest)


class _Roots:
    """Roots of prefixes of ``leaves``, asked for by growing size (one pass over the leaves)."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.frontier = Frontier()

    def root(self, size: int) -> bytes:
        if size < self.frontier.size:  # only the witness can be older than a head already checked
            self.frontier = Frontier()
        self.frontier.extend(self.leaves[self.frontier.size:size])
        return self.frontier.root()


def _head_problem(sth: TreeHead, trusted: dict[str, str], roots: _Roots, first_unsure: int,
                  witness: bool) -> ChainBroken | None:
    what = "the tree head seen before (witness)" if witness else "a signed tree head"
    intact = len(roots.leaves)
    if sth.tree_size > intact:
        return ChainBroken(intact, f"{what} covers {sth.tree_size} events, the log has {intact} intact "
                                   "(events were removed or changed, or the log was rolled back)")
    if not signature_ok(sth, trusted):
        return ChainBroken(first_unsure, f"{what} at size {sth.tree_size} is not signed by a trusted key "
                                         f"(key id {sth.key_id})")
    if roots.root(sth.tree_size).hex() != sth.root:
        return ChainBroken(first_unsure, f"{what} at size {sth.tree_size} does not match the events: one of seq "
                                         f"{first_unsure}..{sth.tree_size - 1} was changed")
    return None


def load_witness(path: Path) -> dict[str, TreeHead]:
    """The last verified head per tenant (empty before the first run)."""
    if not path.exists():
        return {}
    return {t: msgspec.convert(h, TreeHead) for t, h in json.loads(path.read_text()).items()}


def save_witness(path: Path, heads: dict[str, TreeHead]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({t: msgspec.to_builtins(h) for t, h in sorted(heads.items())}, indent=2) + "\n")
    tmp.replace(path)
