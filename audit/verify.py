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

Retention (``compliance.retention``) deletes a tenant's oldest events only up to a signed head
older than the audit retention, and keeps that head with its anchor (the Merkle frontier and the
chain hash at its size, ``schemas/ddl/112_audit_anchors.sql``). When the rows do not run from 0,
verification starts from the newest head old enough (``expire_before_ms``) for retention to have
deleted everything it covers: its signature must be trusted and its frontier must fold to its
signed root. The events before it are reported as expired by retention (``Report.expired``); from
it on, everything above is checked as before, so a gap after it (events deleted that retention
still keeps) is a chain break at its first missing seq; without such a head, a gap is reported
at the first missing seq.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from audit import keys, log
from audit.paths import key_file, witness_file
from audit.chain import GENESIS, ChainBroken, verify_columns
from audit.merkle import Frontier
from audit.sth import TreeHead, verify as signature_ok
from compliance.retention import Retention
from core.settings import Settings
from sinks.clickhouse import Store


@dataclass
class Report:
    """What a verification of one tenant found: events and heads checked, the first problem
    (``None``: intact), the newest head it verified, and how many events before the first one
    checked retention deleted (``expired``: they lie before the anchor head)."""

    tenant: str
    events: int
    heads: int
    problem: ChainBroken | None
    newest: TreeHead | None
    expired: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (what ``GET /v1/tenants/{t}/audit/verify`` answers)."""
        return {"tenant": self.tenant, "events": self.events, "heads": self.heads, "intact": self.problem is None,
                "first_bad_seq": None if self.problem is None else self.problem.seq,
                "reason": None if self.problem is None else self.problem.reason,
                "newest_head": None if self.newest is None else msgspec.to_builtins(self.newest),
                "expired_by_retention": self.expired}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Report:
        problem = None if values["intact"] else ChainBroken(values["first_bad_seq"], values["reason"])
        newest = None if values["newest_head"] is None else msgspec.convert(values["newest_head"], TreeHead)
        return cls(values["tenant"], values["events"], values["heads"], problem, newest, values.get("expired_by_retention", 0))


def verify_configured(settings: Settings, store: Store, tenant: str, since_seq: int = 0) -> Report:
    """:func:`verify_tenant` with the configured key history, the witness file's head and the
    configured audit retention (which heads may anchor a trail whose oldest events expired)."""
    return verify_tenant(store, tenant, keys.trusted_keys(key_file(settings)),
                         load_witness(witness_file(settings)).get(tenant), since_seq,
                         Retention(settings, store).audit_expiry_ms(tenant))


@dataclass
class _Start:
    """Where the chain is verified from: the first seq, the Merkle frontier of the events before
    it and the hash of the last of them (genesis: 0, empty, zeros)."""

    seq: int = 0
    frontier: Frontier = field(default_factory=Frontier)
    chain_hash: bytes = GENESIS


def verify_tenant(store: Store, tenant: str, trusted: dict[str, str], witness: TreeHead | None = None,
                  since_seq: int = 0, expire_before_ms: int | None = None) -> Report:
    """Verify ``tenant``'s trail (see the module docstring). With ``since_seq`` the chain is
    re-hashed from that entry on (its predecessor's hash is taken as given); earlier ids still
    enter the Merkle roots. ``expire_before_ms``: heads signed at or before it may anchor a trail
    whose earlier events are gone (retention deleted them); ``None``: no event may be gone."""
    heads = log.heads(store, tenant)
    start, start_problem = _start(store, tenant, heads, trusted, expire_before_ms)
    since_seq = max(since_seq, start.seq)
    earlier = (log.columns(store, tenant, ("id", "hash"), since_seq=start.seq, until_seq=since_seq)
               if since_seq > start.seq else {"id": [], "hash": []})
    rows = log.columns(store, tenant, since_seq=since_seq)
    chain_hash = earlier["hash"][-1] if earlier["hash"] else start.chain_hash
    chain_problem, leaves = verify_columns(rows["seq"], rows["id"], rows["event"], rows["prev_hash"], rows["hash"],
                                           since_seq, chain_hash)
    problems = [p for p in (start_problem, chain_problem) if p is not None]
    problem = min(problems, key=lambda p: p.seq) if problems else None
    roots = _Roots(start.frontier, earlier["id"] + leaves)
    first_unsure, newest = start.seq, None
    for sth in [*heads, *([witness] if witness else [])]:
        if sth.tree_size < start.seq:
            continue  # covers only expired events; the anchor head, signed later, covers them too
        bad = _head_problem(sth, trusted, roots, first_unsure, witness=sth is witness)
        if bad is not None:
            problem = bad if problem is None or bad.seq < problem.seq else problem
            break
        first_unsure = sth.tree_size
        if sth is not witness:
            newest = sth
    return Report(tenant, roots.size - start.seq, len(heads), problem, newest, start.seq)


def _start(store: Store, tenant: str, heads: list[TreeHead], trusted: dict[str, str],
           expire_before_ms: int | None) -> tuple[_Start, ChainBroken | None]:
    """Genesis when the rows run from seq 0 without a gap. Otherwise the anchor: the newest head
    old enough for retention to have deleted every event it covers, if it proves itself (trusted
    signature, frontier folding to its signed root); without one, genesis and the problem at the
    first missing seq. Gaps after the anchor are left to the chain check."""
    low, high, count = log.seq_range(store, tenant)
    if count == 0 and not heads or low == 0 and high + 1 == count:  # the usual case: one aggregate read
        return _Start(), None
    present = log.seqs(store, tenant)
    if len(present) and present[0] == 0 and not (np.diff(present) > 1).any():
        return _Start(), None  # no gap, only duplicates: the chain check names them
    gap = np.flatnonzero(np.diff(present) > 1)
    first_missing = 0 if not len(present) or present[0] != 0 else int(present[gap[0]]) + 1
    old = [h for h in heads if expire_before_ms is not None and h.timestamp_ms <= expire_before_ms]
    if expire_before_ms is None:
        why = "retention keeps this tenant's audit events forever"
    elif not old:
        why = f"no signed tree head old enough for retention (signed before {_iso(expire_before_ms)}) covers them"
    else:
        anchor_head = old[-1]
        why, start = _anchored(store, tenant, anchor_head, trusted)
        if start is not None:
            return start, None
    return _Start(), ChainBroken(first_missing, f"events from seq {first_missing} on are missing: {why}")


def _anchored(store: Store, tenant: str, head: TreeHead, trusted: dict[str, str]) -> tuple[str, _Start | None]:
    """The start at ``head``'s anchor, or why it cannot be one."""
    anchor = log.anchor(store, tenant, head.tree_size)
    if anchor is None:
        return f"the head at size {head.tree_size} keeps no anchor", None
    if not signature_ok(head, trusted):
        return f"the head at size {head.tree_size} is not signed by a trusted key", None
    try:
        frontier = Frontier.restore(head.tree_size, anchor.nodes)
    except ValueError as exc:
        return f"the anchor of the head at size {head.tree_size} is malformed ({exc})", None
    if frontier.root().hex() != head.root:
        return f"the anchor of the head at size {head.tree_size} does not fold to its signed root", None
    return "", _Start(head.tree_size, frontier, anchor.chain_hash)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


class _Roots:
    """Roots of prefixes of a tree whose first leaves are summed up by ``base`` and whose
    later ones are ``leaves``, asked for by growing size (one pass over the leaves)."""

    def __init__(self, base: Frontier, leaves: list[bytes]) -> None:
        self.base = base
        self.leaves = leaves
        self.frontier = Frontier.restore(base.size, base.nodes)

    @property
    def size(self) -> int:
        """Leaves of the whole tree known intact."""
        return self.base.size + len(self.leaves)

    def root(self, size: int) -> bytes:
        if size < self.frontier.size:  # only the witness can be older than a head already checked
            self.frontier = Frontier.restore(self.base.size, self.base.nodes)
        self.frontier.extend(self.leaves[self.frontier.size - self.base.size:size - self.base.size])
        return self.frontier.root()


def _head_problem(sth: TreeHead, trusted: dict[str, str], roots: _Roots, first_unsure: int,
                  witness: bool) -> ChainBroken | None:
    what = "the tree head seen before (witness)" if witness else "a signed tree head"
    intact = roots.size
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
