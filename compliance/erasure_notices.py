"""Erasure notices: a subject erased through one worker is erased on every store of the deployment.

Workers with stores of their own (several chdb workers, docs/scale-out.md) each keep subject keys,
and ``m1 gdpr erase`` reaches one of them. After it destroyed the key on its store, the erasure
sends a notice (:func:`records`) to the erasures topic (:func:`topic`, ``<M1_TOPIC_AUDIT>-erasures``):
tenant, subject reference and time, authenticated with an HMAC under a key derived from the
deployment's personal-data secret (``pii.key``, which its workers share, as they must for subject
references to agree), so a producer without the secret cannot have anyone's data shredded.

Every store has one consumer group on the topic (:func:`group_id`, from where the store is), read
from the start: each store applies every notice once (:meth:`SubjectKeys.erase_ref`: the key row,
the parts that held it, a tombstone), including those sent while its worker was down. Only a key
made at or before the notice's time goes: a key made since, for values that arrived after the
erasure, stays when an old notice is read again (clocks of the hosts must agree to a second). Workers
sharing a store (one ClickHouse server) share its group, and those that do not apply a notice drop
the key through its tombstone (:mod:`compliance.subject_keys`). Each application is audited as
``gdpr.erase-applied`` (details: the store, whether a key was there), the evidence that every
store has done it.

>>> value = notice(bytes(32), "acme", "0" * 32, 1_700_000_000_000)
>>> n = read(bytes(32), value); n.tenant, n.subject_ref[:4], n.at_ms
('acme', '0000', 1700000000000)
>>> read(bytes(32), value.replace(b"acme", b"acmf")) is None, read(b"another secret", value) is None
(True, True)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence

import faust
import msgspec

from audit import events
from compliance.subject_keys import SubjectKeys, derived_key, pii_secret
from core.settings import Settings
from core.kafka.topics import ensure_topics
from sinks.clickhouse import Store
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.publisher import Publisher
from streams.tracing import in_thread

log = logging.getLogger(__name__)
ACTOR = "m1-erasure-notices"


class Notice(msgspec.Struct, frozen=True):
    """``erasure/1``: the subject reference erased in ``tenant`` at ``at_ms``; ``mac`` (hex) is an
    HMAC-SHA256 of the other fields under the tenant's notice key."""

    tenant: str
    subject_ref: str
    at_ms: int
    mac: str = ""


def topic(settings: Settings) -> str:
    """The erasures topic: the audit topic's name with ``-erasures``."""
    return f"{settings.topic_audit}-erasures"


def group_id(settings: Settings) -> str:
    """The consumer group of this worker's store: one per ClickHouse server or chdb directory."""
    where = settings.clickhouse_url or str(settings.chdb_path.resolve())
    return f"{settings.app_id}-erasures-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


def _mac(secret: bytes, tenant: str, ref: str, at_ms: int) -> str:
    return hmac.new(derived_key(secret, "erasure-notice", tenant), f"{tenant}\0{ref}\0{at_ms}".encode(),
                    hashlib.sha256).hexdigest()


def notice(secret: bytes, tenant: str, ref: str, at_ms: int) -> bytes:
    """The notice's bytes (JSON), authenticated with ``secret`` (:func:`pii_secret`)."""
    return msgspec.json.encode(Notice(tenant, ref, at_ms, _mac(secret, tenant, ref, at_ms)))


def read(secret: bytes, value: bytes | None) -> Notice | None:
    """The notice, if authentic; ``None`` (logged) for anything else."""
    try:
        n = msgspec.json.decode(value or b"", type=Notice)
    except msgspec.DecodeError:
        log.warning("erasure notices: a record that is no notice was skipped")
        return None
    if not hmac.compare_digest(n.mac, _mac(secret, n.tenant, n.subject_ref, n.at_ms)):
        log.warning("erasure notices: a notice for tenant %r does not authenticate; skipped", n.tenant)
        return None
    return n


def records(settings: Settings, tenant: str, ref: str) -> list[tuple[str, bytes, bytes]]:
    """The ``(topic, key, value)`` record of one erasure's notice."""
    return [(topic(settings), tenant.encode(), notice(pii_secret(settings), tenant, ref, int(time.time() * 1000)))]


def send(settings: Settings, tenant: str, ref: str) -> None:
    """Send the notice now and wait for the broker (for the command line, without a worker)."""
    from core.kafka.producer import make_producer

    async def run() -> None:
        ensure_topics(settings, [topic(settings)])
        producer = make_producer(settings)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(t, v, key=k) for t, k, v in records(settings, tenant, ref)])
        finally:
            await producer.stop()

    asyncio.run(run())


def wire(app: faust.App, settings: Settings, store: Store, publisher: Publisher) -> None:
    """Add the consumer that applies every notice to this worker's store (see module)."""
    ensure_topics(settings, [topic(settings)])
    keys = SubjectKeys.from_settings(settings, store)
    secret, group = pii_secret(settings), group_id(settings)

    def apply(batch: Sequence[KafkaEvent]) -> list[tuple[str, str, bool]]:
        notices = [n for e in batch if (n := read(secret, e.value)) is not None]
        return [(n.tenant, n.subject_ref, keys.erase_ref(n.tenant, n.subject_ref, made_before_ms=n.at_ms))
                for n in notices]

    async def handle(batch: Sequence[KafkaEvent]) -> None:
        applied = await in_thread(apply, batch)
        await publisher.publish(events.records(settings, [
            events.event(settings, "gdpr.erase-applied", f"subject:{ref}", "success",
                         {"store": group.rsplit("-", 1)[1], "key_destroyed": existed}, actor=ACTOR, tenant=tenant)
            for tenant, ref, existed in applied]))

    app.service(BatchConsumer(settings.model_copy(update={"tenant_topics": False}), topic(settings),
                              group_id=group, handler=handle, checkpoints=[]))
