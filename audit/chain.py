"""Canonical bytes of an audit event, its id, and the per-tenant hash chain.

The canonical bytes of an ``audit/1`` event are its msgspec JSON with the keys sorted, no
whitespace, every field present (defaults included) and floats in shortest round-trip form:
decoding any JSON spelling of an event and encoding it again gives the same bytes. An event's
id is the RFC 9162 leaf hash of those bytes (hex), so a replayed record has the id it had the
first time, and the id an auditor recomputes from the event is the leaf the Merkle proofs use.

Each tenant's events form one chain: ``seq`` 0, 1, 2, ... and
``hash = SHA-256(prev_hash || canonical)``, with ``prev_hash`` of seq 0 = 32 zero bytes.

>>> from schemas.events import AuditEvent
>>> e = AuditEvent(ts=1700000000.5, tenant="acme", region="eu", actor="key:1", action="read",
...                resource="/v1/x", outcome="success")
>>> canonical(e)
b'{"action":"read","actor":"key:1","details":{},"outcome":"success","region":"eu","resource":"/v1/x","schema":"audit/1","tenant":"acme","ts":1700000000.5}'
>>> chain = Chain("acme")
>>> [(r.seq, r.prev_hash == GENESIS.hex()) for r in (chain.append(canonical(e)), chain.append(b"{}"))]
[(0, True), (1, False)]
>>> first, second = chain.take()
>>> second.prev_hash == first.hash == link(GENESIS, canonical(e)).hex()
True
>>> digests = lambda name: [bytes.fromhex(getattr(r, name)) for r in (first, second)]
>>> verify_columns([0, 1], digests("id"), [canonical(e), b"{}"], digests("prev_hash"), digests("hash"))[0] is None
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from audit.merkle import Frontier, leaf_hash
from schemas.events import AuditEvent

#: ``prev_hash`` of every chain's first entry.
GENESIS = bytes(32)


def canonical(event: AuditEvent) -> bytes:
    """The event's canonical bytes (see the module docstring)."""
    return msgspec.json.encode(event, order="sorted")


def event_id(data: bytes) -> str:
    """The id of the event with canonical bytes ``data``: its RFC 9162 leaf hash, hex."""
    return leaf_hash(data).hex()


def link(prev_hash: bytes, data: bytes) -> bytes:
    """``SHA-256(prev_hash || data)``."""
    return hashlib.sha256(prev_hash + data).digest()


@dataclass(frozen=True)
class Row:
    """One ``audit_log`` row as written (hashes hex, ``event`` the canonical JSON text)."""

    tenant: str
    seq: int
    id: str
    event: str
    prev_hash: str
    hash: str


@dataclass
class Chain:
    """The head of one tenant's chain: the next seq, the last hash and the Merkle frontier of
    every leaf so far; ``rows`` collects what :meth:`append` made until the caller takes them."""

    tenant: str
    head: bytes = GENESIS
    frontier: Frontier = field(default_factory=Frontier)
    rows: list[Row] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.frontier.size

    def append(self, data: bytes) -> Row:
        """Chain the event with canonical bytes ``data`` as the next entry."""
        leaf = leaf_hash(data)
        digest = link(self.head, data)
        row = Row(self.tenant, self.size, leaf.hex(), data.decode(), self.head.hex(), digest.hex())
        self.frontier.append(leaf)
        self.head = digest
        self.rows.append(row)
        return row

    def take(self) -> list[Row]:
        rows, self.rows = self.rows, []
        return rows


class ChainBroken(ValueError):
    """The chain is not intact at ``seq`` (the first bad sequence number); ``reason`` says how."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


def verify_columns(seqs: Sequence[int], ids: Sequence[bytes], events: Sequence[bytes], prev_hashes: Sequence[bytes],
                   hashes: Sequence[bytes], start_seq: int = 0, head: bytes = GENESIS) -> tuple[ChainBroken | None, list[bytes]]:
    """The first break of a tenant's rows given as columns ordered by seq (digests as raw bytes; the
    chain from ``start_seq`` whose previous hash is ``head``), or ``None`` when every row is intact:
    seq contiguous, the id the leaf hash of the event, prev_hash the previous hash and hash =
    SHA-256(prev_hash || event). Also returns the leaf hashes of the rows checked before the first
    break (all of them when intact). One tight loop: verification runs here."""
    sha256 = hashlib.sha256
    leaves: list[bytes] = []
    prev = head
    for i, (seq, id_, data, prev_hash, digest) in enumerate(zip(seqs, ids, events, prev_hashes, hashes)):
        expected = start_seq + i
        if seq != expected:
            return ChainBroken(expected, f"found seq {seq} where {expected} belongs (a row missing, added or moved)"), leaves
        leaf = sha256(b"\x00" + data).digest()
        if leaf != id_:
            return ChainBroken(seq, "the id is not the leaf hash of the event"), leaves
        if prev_hash != prev:
            return ChainBroken(seq, "prev_hash is not the previous entry's hash"), leaves
        prev = sha256(prev_hash + data).digest()
        if prev != digest:
            return ChainBroken(seq, "hash is not SHA-256(prev_hash || event): the event or its hash was changed"), leaves
        leaves.append(leaf)
    return None, leaves
