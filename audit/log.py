"""The audit tables (``schemas/ddl/080_audit.sql``): append chained rows and signed tree heads,
read them back for recovery, verification and proofs, and mirror the public-key history.

Every function takes the :class:`~sinks.clickhouse.Store`; reads are the pipeline's own trusted
queries with the tenant passed as a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from audit.chain import Row
from audit.sth import TreeHead
from sinks.clickhouse import TS_TYPE, Store

def append(store: Store, rows: Sequence[Row]) -> int:
    """Insert chained rows into ``audit_log``."""
    if not rows:
        return 0
    return store.insert("audit_log", {
        "tenant": [r.tenant for r in rows], "seq": pa.array([r.seq for r in rows], type=pa.uint64()),
        "id": [r.id for r in rows], "event": [r.event for r in rows],
        "prev_hash": [r.prev_hash for r in rows], "hash": [r.hash for r in rows]})


def tenants(store: Store) -> list[str]:
    """Tenants with audit rows or tree heads."""
    sql = "SELECT DISTINCT tenant FROM (SELECT tenant FROM audit_log UNION ALL SELECT tenant FROM audit_checkpoints) ORDER BY tenant"
    return [r[0] for r in store.query(sql).rows]


#: Columns holding a digest as hex; :func:`columns` returns them as raw bytes (``unhex`` in the engine).
DIGESTS = ("id", "prev_hash", "hash")


def columns(store: Store, tenant: str, names: Sequence[str] = ("seq", "id", "event", "prev_hash", "hash"),
            since_seq: int = 0, until_seq: int | None = None) -> dict[str, list[Any]]:
    """Columns ``names`` of a tenant's rows from ``since_seq`` (to ``until_seq``, exclusive), ordered
    by seq: ``seq`` as int, ``event`` as bytes, the digests (:data:`DIGESTS`) as raw 32 bytes."""
    bound = "" if until_seq is None else " AND seq < {until:UInt64}"
    select = ", ".join(f"unhex({n}) AS {n}" if n in DIGESTS else n for n in names)
    table = store.query_arrow(
        f"SELECT {select} FROM audit_log WHERE tenant = {{tenant:String}} AND seq >= {{since:UInt64}}{bound} "
        "ORDER BY seq", {"tenant": tenant, "since": since_seq, "until": until_seq or 0})
    return {n: table.column(n).to_pylist() if n == "seq" else table.column(n).cast(pa.binary()).to_pylist()
            for n in names}


def first_seq_since(store: Store, tenant: str, since: float) -> int:
    """The seq of the tenant's first event stamped at or after ``since`` (epoch seconds); the
    log's size when there is none."""
    rows = store.query("SELECT minIf(seq, ts >= fromUnixTimestamp64Milli({ms:Int64})), countIf(ts >= "
                       "fromUnixTimestamp64Milli({ms:Int64})), count() FROM audit_log WHERE tenant = {t:String}",
                       {"t": tenant, "ms": int(since * 1000)}).rows
    first, later, total = (int(v) for v in rows[0])
    return first if later else total


def find(store: Store, event_id: str) -> tuple[str, int] | None:
    """``(tenant, seq)`` of the event with ``event_id``."""
    rows = store.query("SELECT tenant, seq FROM audit_log WHERE id = {id:String} ORDER BY seq LIMIT 1",
                       {"id": event_id}).rows
    return (rows[0][0], int(rows[0][1])) if rows else None


def known_ids(store: Store, tenant: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are already in ``tenant``'s chain."""
    wanted = list(ids)
    if not wanted:
        return set()
    rows = store.query("SELECT id FROM audit_log WHERE tenant = {tenant:String} AND id IN {ids:Array(String)}",
                       {"tenant": tenant, "ids": wanted}).rows
    return {r[0] for r in rows}


def insert_heads(store: Store, heads: Sequence[TreeHead], anchors: Sequence[Anchor] | None = None) -> int:
    """Insert signed tree heads, each with its :class:`Anchor` (the same order; ``None``: heads
    without one, which cannot anchor a verification after retention)."""
    if not heads:
        return 0
    if anchors is None:
        anchors = [Anchor([], b"")] * len(heads)
    return store.insert("audit_checkpoints", {
        "tenant": [h.tenant for h in heads], "tree_size": pa.array([h.tree_size for h in heads], type=pa.uint64()),
        "root": [h.root for h in heads], "ts": pa.array([h.timestamp_ms for h in heads], type=TS_TYPE),
        "key_id": [h.key_id for h in heads], "signature": [h.signature for h in heads],
        "frontier": ["".join(n.hex() for n in a.nodes) for a in anchors], "chain_hash": [a.chain_hash.hex() for a in anchors]})


class Anchor(NamedTuple):
    """What a tree head keeps so the chain can be verified after its events expire: the
    Merkle frontier's nodes (``audit.merkle.Frontier.nodes``) and the last event's chain hash."""

    nodes: list[bytes]
    chain_hash: bytes


def anchor(store: Store, tenant: str, tree_size: int) -> Anchor | None:
    """The anchor stored with the tenant's head of ``tree_size`` (``None``: a head written before
    anchors were kept, or none)."""
    rows = store.query("SELECT frontier, chain_hash FROM audit_checkpoints WHERE tenant = {t:String} AND "
                       "tree_size = {n:UInt64} AND chain_hash != '' ORDER BY ts LIMIT 1", {"t": tenant, "n": tree_size}).rows
    if not rows:
        return None
    frontier, chain_hash = rows[0]
    return Anchor([bytes.fromhex(frontier[i:i + 64]) for i in range(0, len(frontier), 64)], bytes.fromhex(chain_hash))


def seq_range(store: Store, tenant: str) -> tuple[int, int, int]:
    """``(lowest seq, highest seq, rows)`` of a tenant's rows (0, 0, 0 without any)."""
    low, high, count = store.query("SELECT min(seq), max(seq), count() FROM audit_log WHERE tenant = {t:String}",
                                   {"t": tenant}).rows[0]
    return int(low), int(high), int(count)


def seqs(store: Store, tenant: str) -> np.ndarray:
    """The sequence numbers of a tenant's rows, ascending (int64)."""
    return store.query_arrow("SELECT toInt64(seq) AS seq FROM audit_log WHERE tenant = {t:String} ORDER BY seq",
                             {"t": tenant}).column("seq").to_numpy()


def heads(store: Store, tenant: str) -> list[TreeHead]:
    """A tenant's signed tree heads, by tree size (then time)."""
    rows = store.query("SELECT tenant, tree_size, root, toUnixTimestamp64Milli(ts), key_id, signature "
                       "FROM audit_checkpoints WHERE tenant = {tenant:String} ORDER BY tree_size, ts",
                       {"tenant": tenant}).rows
    return [TreeHead(t, int(size), root, int(ms), kid, sig) for t, size, root, ms, kid, sig in rows]


def record_keys(store: Store, history: Sequence[dict[str, Any]]) -> int:
    """Mirror the public-key history into ``audit_keys`` (append-only: a retirement is a new row)."""
    have = {(k, r is not None) for k, r in store.query("SELECT key_id, retired_at FROM audit_keys").rows}
    new = [k for k in history if (k["key_id"], k["retired_at_ms"] is not None) not in have]
    if not new:
        return 0
    return store.insert("audit_keys", {
        "key_id": [k["key_id"] for k in new], "algorithm": [k["algorithm"] for k in new],
        "public_key": [k["public_key"] for k in new],
        "created_at": pa.array([k["created_at_ms"] for k in new], type=TS_TYPE),
        "retired_at": pa.array([k["retired_at_ms"] for k in new], type=TS_TYPE)})
