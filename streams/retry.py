"""What a consumer does with a batch whose handling failed: retry, back off, dead-letter or wait.

Every consumer of the pipeline (the batch consumer, the OTLP agents) hands each batch to
:func:`handle_batch`, which tries the batch until it is done. A failure is one of three
:class:`Fault` s, told apart by the exception (:func:`fault_of`). clickhouse-connect raises the
same classes for the embedded chdb engine and for a server:

* ``UNAVAILABLE``: the store can take no batch now. clickhouse-connect's ``OperationalError``
  (the HTTP transport's only error for a refused or reset connection, a timeout, or 429/503/504
  answers still failing after the client's own retries), or an engine error whose code
  (:data:`UNAVAILABLE_CODES`) fails every write alike: a read-only replica, a full disk, too many
  parts, lost Keeper, a login or grant that no longer works, a dropped table. It is not the
  batch's fault, so the batch is never dead-lettered for it: the consumer pauses its input
  (backpressure), retries the same batch with capped backoff for as long as it takes, logs the
  outage when it starts, every :data:`OUTAGE_LOG_SECONDS` while it lasts and when it ends, and
  resumes its input after the first success.
* ``REJECTED``: any other ``DatabaseError``: the engine refused this batch (a value that a
  constraint or a column type refuses, ...). The batch is tried ``M1_STORE_RETRY_ATTEMPTS`` times
  in all; then its records are dead-lettered with the reason ``store: <the engine's message>``
  (each dead letter keeps its record, so nothing is lost) and the stream moves on.
* ``OTHER``: anything else (Kafka refused a send, a bug). Nothing says the batch is at fault, so
  it is retried with capped backoff, logged each time, and never dead-lettered.

Between tries the input stays paused. Offsets are the consumer's business: it acknowledges a
batch only once :func:`handle_batch` returned ``True`` (handled, or its records dead-lettered).
A consumer may give a waiting batch up instead (it stops, or a rebalance sent its partitions
back to their last commit): :func:`handle_batch` returns ``False``, and the batch is read again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum, auto
from functools import partial
from typing import TYPE_CHECKING, Protocol

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

#: ClickHouse error codes (and their names) that fail every write alike, not one batch.
UNAVAILABLE_CODES: dict[int, str] = {
    60: "UNKNOWN_TABLE",
    81: "UNKNOWN_DATABASE",
    164: "READONLY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    279: "ALL_CONNECTION_TRIES_FAILED",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
    999: "KEEPER_EXCEPTION",
}

#: How often a continuing outage is logged again.
OUTAGE_LOG_SECONDS = 60.0

#: Longest engine message kept in a dead letter's reason.
REASON_CHARS = 300


class Fault(Enum):
    """Why a batch failed: see the module docstring."""

    UNAVAILABLE = auto()
    REJECTED = auto()
    OTHER = auto()


def fault_of(exc: BaseException) -> Fault:
    """The kind of failure ``exc`` is (see the module docstring)."""
    if isinstance(exc, OperationalError) or (isinstance(exc, DatabaseError) and exc.code in UNAVAILABLE_CODES):
        return Fault.UNAVAILABLE
    if isinstance(exc, DatabaseError):
        return Fault.REJECTED
    return Fault.OTHER


def store_reason(exc: BaseException) -> str:
    """The dead-letter reason of a batch the store rejected with ``exc``: ``store: `` and the
    engine's message on one line, at most :data:`REASON_CHARS` of it."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if len(message) > REASON_CHARS:
        message = message[: REASON_CHARS - 1] + "…"
    return f"store: {message}"


@dataclass(frozen=True)
class RetryPolicy:
    """Tries of a rejected batch, and the backoff between any two tries of a batch."""

    attempts: int
    base_seconds: float
    max_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.store_retry_attempts, settings.store_retry_base_seconds, settings.store_retry_max_seconds)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row: ``base * 2**(failures-1)``,
        capped at ``max_seconds``, of which a random half is taken off (jitter, so that workers
        failing together do not retry together); never more than ``max_seconds``."""
        ceiling = min(self.max_seconds, self.base_seconds * 2.0 ** min(failures - 1, 60))
        return ceiling * (0.5 + 0.5 * random.random())


class Backpressure(Protocol):
    """How a consumer holds its input while a batch is retried."""

    def pause_input(self) -> None:
        """Stop taking new records (idempotent)."""

    def resume_input(self) -> None:
        """Take new records again (idempotent)."""

    async def backoff(self, seconds: float) -> bool:
        """Wait ``seconds`` with the input paused; ``False`` if the consumer gives the batch up
        instead (it stops, or it will read the batch again)."""


class AgentBackpressure:
    """Backpressure of a Faust agent: it holds its input by not reading its stream (whose buffer
    fills, and Faust stops fetching those partitions); it stops by being cancelled."""

    def pause_input(self) -> None:
        pass

    def resume_input(self) -> None:
        pass

    async def backoff(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return True


#: Dead-letters every record of the batch at hand with the given reason.
DeadLetterBatch = Callable[[str], Awaitable[None]]


async def handle_batch(handle: Callable[[], Awaitable[None]], dead_letter: DeadLetterBatch | None,
                       policy: RetryPolicy, source: Backpressure, what: str) -> bool:
    """Try ``handle()`` until the batch is done, as the module docstring says; ``True`` once it is
    handled or, after ``policy.attempts`` rejections by the store, dead-lettered (without
    ``dead_letter``, a rejected batch is retried like any other), ``False`` if ``source`` gives
    it up first (the batch is then not done: its offsets must not be committed). ``what`` names the
    batch in the log."""
    failures = rejections = 0
    outage: Outage | None = None
    while True:
        try:
            await handle()
        except Exception as exc:
            failures += 1
            source.pause_input()
            delay = policy.delay(failures)
            fault = fault_of(exc)
            if fault is not Fault.UNAVAILABLE and outage is not None:  # failed otherwise: the store answered
                outage.ended()
                outage = None
            if fault is Fault.UNAVAILABLE:
                outage = outage or Outage(what)
                outage.failed(exc, delay)
            elif fault is Fault.REJECTED and dead_letter is not None:
                rejections += 1
                if rejections < policy.attempts:
                    log.warning("%s: rejected by the store (try %d of %d): %s; retrying in %.1f s",
                                what, rejections, policy.attempts, exc, delay)
                else:
                    reason = store_reason(exc)
                    log.error("%s: rejected by the store %d times; dead-lettering its records (%s)", what, rejections, reason)
                    handle, dead_letter, delay = partial(dead_letter, reason), None, 0.0
            else:
                log.warning("%s: failed (try %d); retrying in %.1f s", what, failures, delay, exc_info=True)
            if not await source.backoff(delay):
                return False
        else:
            if outage is not None:
                outage.ended()
            if failures:
                source.resume_input()
            return True


class Outage:
    """The log of one store outage as one batch sees it: when it starts, every
    :data:`OUTAGE_LOG_SECONDS` while it lasts, and when it ends."""

    def __init__(self, what: str):
        self.what = what
        self.started = self.logged = time.monotonic()
        self.failures = 0

    def failed(self, exc: BaseException, delay: float) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1:
            log.warning("%s: store unavailable (%s); input paused, retrying the batch until the store takes it",
                        self.what, exc)
        elif now - self.logged >= OUTAGE_LOG_SECONDS:
            self.logged = now
            log.warning("%s: store still unavailable after %.0f s and %d tries (%s); next try in %.1f s",
                        self.what, now - self.started, self.failures, exc, delay)

    def ended(self) -> None:
        log.warning("%s: store available again after %.0f s and %d failed tries",
                    self.what, time.monotonic() - self.started, self.failures)
