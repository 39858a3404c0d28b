"""Chain a batch of ``audit/1`` records: decode, deduplicate by id, append, sign tree heads.

:class:`AuditIngest` is the pure part of the audit topic's consumer (``audit.service`` runs it
in a thread for every batch of the :class:`~streams.batch_consumer.BatchConsumer`):

1. each record is decoded strictly (an invalid one becomes a dead letter), passes the
   personal-data policy (``redact``, ``compliance.redact``: actor, resource, details...) and is
   reduced to its canonical bytes and id (:mod:`audit.chain`), so the chain, the proofs and the
   table hold the redacted event;
2. an event whose id the tenant's chain already holds is dropped *before* chaining, so a Kafka
   replay after a crash adds nothing. The chain remembers its last ``M1_AUDIT_DEDUPE_WINDOW``
   ids; for a longer chain, ids outside that window are looked up in ``audit_log``;
3. new events are chained and inserted in one insert;
4. a tenant whose chain grew by ``M1_AUDIT_CHECKPOINT_EVENTS`` since its last signed tree head
   gets a new one now; :meth:`AuditIngest.due_heads` signs those that waited
   ``M1_AUDIT_CHECKPOINT_SECONDS`` (the consumer's checkpoint clock calls it).

A tenant's chain state is recovered from the table the first time the tenant is seen (its
ids in seq order rebuild the Merkle frontier; the last row gives the head hash), so a worker
killed mid-chain continues exactly where the table ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from audit import log
from audit.chain import GENESIS, Chain, Row, canonical, event_id
from audit.signer import Signer
from audit.sth import TreeHead
from schemas.events import AuditEvent, EventDecoder, InvalidEvent
from sinks.clickhouse import Store


@dataclass
class TenantState:
    """A tenant's chain, its recent ids and its last signed tree head (size and time)."""

    chain: Chain
    recent: deque[str]
    recent_ids: set[str]
    head_size: int = 0
    head_at: float = 0.0

    def remember(self, id_: str) -> None:
        if len(self.recent) == self.recent.maxlen:
            self.recent_ids.discard(self.recent[0])
        self.recent.append(id_)
        self.recent_ids.add(id_)


@dataclass
class Outcome:
    """What one batch did: rows chained, duplicates dropped, heads signed, records rejected
    (``(index in the batch, reason)``)."""

    rows: list[Row] = field(default_factory=list)
    duplicates: int = 0
    heads: list[TreeHead] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


class AuditIngest:
    """Chains batches into ``audit_log`` and signs heads into ``audit_checkpoints`` (see module)."""

    def __init__(self, store: Store, signer: Signer, checkpoint_events: int = 1000, checkpoint_seconds: float = 60.0,
                 dedupe_window: int = 100_000, max_bytes: int = 65_536, clock: Callable[[], float] = time.time, *,
                 redact: Callable[[AuditEvent], AuditEvent]) -> None:
        self.store = store
        self.redact = redact
        self.signer = signer
        self.checkpoint_events = checkpoint_events
        self.checkpoint_seconds = checkpoint_seconds
        self.dedupe_window = dedupe_window
        self.clock = clock
        self._decoder = EventDecoder(AuditEvent, max_bytes)
        self._tenants: dict[str, TenantState] = {}
        self._lock = threading.Lock()

    def process(self, payloads: Sequence[bytes | None]) -> Outcome:
        """Chain the valid, new events of ``payloads`` (in order) and sign the heads now due."""
        outcome = Outcome()
        by_tenant: dict[str, list[tuple[str, bytes]]] = {}
        for i, payload in enumerate(payloads):
            try:
                event = self.redact(self._decoder.decode(payload))
            except InvalidEvent as exc:
                outcome.rejected.append((i, exc.reason))
                continue
            data = canonical(event)
            by_tenant.setdefault(event.tenant, []).append((event_id(data), data))
        with self._lock:
            for tenant, events in by_tenant.items():
                state = self._state(tenant)
                fresh = self._unseen(state, events)
                outcome.duplicates += len(events) - len(fresh)
                for id_, data in fresh:
                    state.chain.append(data)
                    state.remember(id_)
                outcome.rows += state.chain.take()
            try:
                log.append(self.store, outcome.rows)
            except Exception:  # forget what was not stored: the retried batch is chained from the table again
                for tenant in by_tenant:
                    self._tenants.pop(tenant, None)
                raise
            outcome.heads = self._sign(by_tenant, lambda s: s.chain.size - s.head_size >= self.checkpoint_events)
        return outcome

    def due_heads(self) -> list[TreeHead]:
        """Sign a head for every tenant whose chain grew and whose last head is older than
        ``checkpoint_seconds``; returns them (stored already)."""
        now = self.clock()
        with self._lock:
            return self._sign(self._tenants, lambda s: s.chain.size > s.head_size
                              and now - s.head_at >= self.checkpoint_seconds)

    def _sign(self, tenants: Iterable[str], due: Callable[[TenantState], bool]) -> list[TreeHead]:
        now = self.clock()
        signed = [(state, self.signer.sign(tenant, state.chain.size, state.chain.frontier.root(), int(now * 1000)))
                  for tenant in tenants if due(state := self._tenants[tenant])]
        log.insert_heads(self.store, [head for _, head in signed],
                         [log.Anchor(state.chain.frontier.nodes, state.chain.head) for state, _ in signed])
        for state, head in signed:  # only once stored: a failed insert signs them again next time
            state.head_size, state.head_at = head.tree_size, now
        return [head for _, head in signed]

    def _unseen(self, state: TenantState, events: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """``events`` minus those already chained (or earlier in the same list)."""
        candidates = [e for e in events if e[0] not in state.recent_ids]
        if state.chain.size > len(state.recent):  # older ids are only in the table
            known = log.known_ids(self.store, state.chain.tenant, {id_ for id_, _ in candidates})
            candidates = [e for e in candidates if e[0] not in known]
        first: dict[str, bytes] = {}
        for id_, data in candidates:
            first.setdefault(id_, data)
        return list(first.items())

    def _state(self, tenant: str) -> TenantState:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = self._recover(tenant)
        return state

    def _recover(self, tenant: str) -> TenantState:
        """The tenant's state as the table has it (empty for a new tenant)."""
        columns = log.columns(self.store, tenant, ("id", "hash"))
        chain = Chain(tenant, columns["hash"][-1] if columns["hash"] else GENESIS)
        chain.frontier.extend(columns["id"])
        recent = deque((i.hex() for i in columns["id"][-self.dedupe_window:]), maxlen=self.dedupe_window)
        heads = log.heads(self.store, tenant)
        last = heads[-1] if heads else None
        return TenantState(chain, recent, set(recent), last.tree_size if last else 0,
                           last.timestamp_ms / 1000 if last else self.clock())
