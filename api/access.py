"""The access log: every authorisation decision, allowed or denied, as a JSON log line and a row.

Each decision is logged at once as one JSON object on the logger ``m1.access`` and queued for
the append-only ``access_log`` table (``schemas/ddl/060_access_log.sql``), which a small task
writes in batches (every ``flush_seconds``, or sooner when ``batch_rows`` are waiting) instead
of one insert per request. If the store refuses a batch it is kept and retried, at most
``max_pending`` decisions are held (the oldest go first, with a warning; the log lines remain).
``GET /v1/tenants/{tenant}/audit`` reads the table. A ``listener`` (the worker's: ``audit.service``)
is told of every decision too, which the hash-chained audit trail records (``docs/audit.md``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa

from compliance.redact import Redactor
from sinks.clickhouse import TS_TYPE, Store
from core.tenant_names import PLATFORM

log = logging.getLogger("m1.access")
_own = logging.getLogger(__name__)


@dataclass
class AccessEntry:
    """One decision: who (subject, via, roles), on whose data (tenant), what (method, path,
    permission), the decision (``allow`` / ``deny``), the status answered and why."""

    ts: float
    method: str
    path: str
    remote: str
    tenant: str = ""
    subject: str = ""
    via: str = ""
    roles: list[str] = field(default_factory=list)
    permission: str = ""
    decision: str = "deny"
    status: int = 0
    reason: str = ""
    duration_ms: float = 0.0


class AccessLog:
    """Queue of decisions and the task that writes them to ``access_log`` in batches."""

    def __init__(self, store: Store, flush_seconds: float = 1.0, batch_rows: int = 1000,
                 max_pending: int = 100_000, listener: Callable[[AccessEntry], None] | None = None,
                 redactor: Redactor | None = None) -> None:
        self.store = store
        self.redactor = redactor  # the personal-data policy (the API's: api.app); None only in tests
        self.listener = listener  # also told of every decision (the worker: the audit trail, audit.service)
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self._pending: deque[AccessEntry] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    def record(self, entry: AccessEntry) -> None:
        """Log ``entry`` now and queue it for the table, its client address, path, subject and
        reason passed through the personal-data policy first (``compliance.redact``)."""
        if self.redactor is not None:
            entry = redacted(entry, self.redactor)
        log.info(json.dumps(asdict(entry), separators=(",", ":")))
        if self.listener is not None:
            self.listener(entry)
        if len(self._pending) == self._pending.maxlen:
            _own.warning("access log: %d decisions wait for the store; dropping the oldest", len(self._pending))
        self._pending.append(entry)
        if len(self._pending) >= self.batch_rows:
            self._wake.set()

    async def flush(self) -> int:
        """Write every queued decision now; returns how many were written."""
        async with self._flushing:
            batch = list(self._pending)
            if not batch:
                return 0
            await asyncio.to_thread(self.store.insert, "access_log", _columns(batch))
            for _ in batch:  # record() may have appended meanwhile: drop only what was written
                self._pending.popleft()
            return len(batch)

    async def running(self, _app: Any = None) -> AsyncIterator[None]:
        """Flush periodically while in the ``async with`` / aiohttp ``cleanup_ctx``; a last flush at the end."""
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            try:
                await self.flush()
            except Exception:
                _own.exception("access log: the last %d decisions were not stored", len(self._pending))

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # kept and retried next time
                _own.exception("access log: writing %d decisions failed; retrying", len(self._pending))


def redacted(entry: AccessEntry, redactor: Redactor) -> AccessEntry:
    """``entry`` with personal data in its free-text fields pseudonymised or redacted as the
    policy's detectors say (the client's address becomes its pseudonym in the entry's tenant)."""
    tenant = entry.tenant or PLATFORM
    return replace(entry, **{name: redactor.scan(tenant, getattr(entry, name)) for name in ("remote", "path", "subject", "reason")})


def _columns(batch: list[AccessEntry]) -> dict[str, Any]:
    rows = [asdict(e) for e in batch]
    columns: dict[str, Any] = {name: [row[name] for row in rows] for name in rows[0]}
    columns["ts"] = pa.array([int(e.ts * 1000) for e in batch], type=TS_TYPE)
    columns["roles"] = pa.array(columns["roles"], type=pa.list_(pa.string()))
    columns["status"] = pa.array(columns["status"], type=pa.uint16())
    columns["duration_ms"] = pa.array(columns["duration_ms"], type=pa.float32())
    return columns
