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
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from audit import keys, log
from audit.paths import key_file, witness_file
from audit.chain import GENESIS, ChainBroken, verify_columns
from audit.merkle import Frontier
from audit.sth import TreeHead, verify as signature_ok
from m1.settings import Settings
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

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (what ``GET /v1/tenants/{t}/audit/verify`` answers)."""
        return {"tenant": self.tenant, "events": self.events, "heads": self.heads, "intact": self.problem is None,
                "first_bad_seq": None if self.problem is None else self.problem.seq,
                "reason": None if self.problem is None else self.problem.reason,
                "newest_head": None if self.newest is None else msgspec.to_builtins(self.newest)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Report:
        problem = None if values["intact"] else ChainBroken(values["first_bad_seq"], values["reason"])
        newest = None if values["newest_head"] is None else msgspec.convert(values["newest_head"], TreeHead)
        return cls(values["tenant"], values["events"], values["heads"], problem, newest)


def verify_configured(settings: Settings, store: Store, tenant: str, since_seq: int = 0) -> Report:
    """:func:`verify_tenant` with the configured key history and the witness file's head."""
    return verify_tenant(store, tenant, keys.trusted_keys(key_file(settings)),
                         load_witness(witness_file(settings)).get(tenant), since_seq)


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


def duration_seconds(text: str) -> int:
    """Seconds of ``90s``, ``15m``, ``2h``, ``7d`` (a bare number is seconds).

    >>> duration_seconds("7d"), duration_seconds("90")
    (604800, 90)
    """
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 15m, 90s, 2h or 7d")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def verify_now(settings: Settings, store: Store, tenant: str, since: str | None = None) -> dict[str, Any]:
    """:func:`verify_configured` of ``tenant`` (re-hashing only the events of the last ``since``,
    a duration) as JSON-ready values."""
    since_seq = log.first_seq_since(store, tenant, time.time() - duration_seconds(since)) if since else 0
    return verify_configured(settings, store, tenant, since_seq).as_dict()


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
