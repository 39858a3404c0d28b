"""The audit events the pipeline writes about itself, and sending them to the audit topic.

Every audit event, the pipeline's own included, enters the trail one way: as an ``audit/1``
record on ``M1_TOPIC_AUDIT``, keyed by tenant, so one consumer (the partition's owner) chains
each tenant and a replay is deduplicated like any other record. Actions:

- ``config.start``: a worker started; ``settings_sha256`` hashes its non-secret settings;
- ``api.request``: one access decision of the API (the same decision as the ``access_log`` row);
- ``audit.verify``: a run of ``m1 audit verify`` and its result;
- ``audit.key-rotate``: a new signing key replaced the old one.

>>> from core.settings import Settings
>>> e = config_event(Settings(home="/tmp/x", kafka_bootstrap="k:9092"), now=1700000000.0)
>>> e.action, e.tenant, len(e.details["settings_sha256"])
('config.start', 'platform', 64)
>>> config_event(Settings(home="/tmp/x", kafka_sasl_password="a"), 1.7e9).details == config_event(
...     Settings(home="/tmp/x", kafka_sasl_password="b"), 1.7e9).details  # secrets are not hashed
True
>>> from api.access import AccessEntry
>>> from schemas.events import EventDecoder
>>> a = access_event(Settings(), AccessEntry(1.7e9, "GET", "/v1/tenants/Bad..Name/x", "::1", tenant="Bad..Name"))
>>> a.tenant, a.outcome, a.details["asked_tenant"], EventDecoder(AuditEvent).decode(encode(a)) == a  # valid audit/1 whatever was asked
('platform', 'denied', 'Bad..Name', True)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from pydantic import SecretStr

from core.settings import Settings
from schemas.events import AuditEvent, encode
from core.tenant_names import PLATFORM, check_tenant

if TYPE_CHECKING:
    from api.access import AccessEntry

_VALUE = 256  # longest label value audit/1 allows


def event(settings: Settings, action: str, resource: str, outcome: str, details: Mapping[str, object],
          actor: str = "m1", tenant: str = PLATFORM, now: float | None = None) -> AuditEvent:
    """An ``audit/1`` event of the pipeline's own (values cut to what the schema allows)."""
    return AuditEvent(ts=time.time() if now is None else now, tenant=tenant, region=settings.audit_region,
                      actor=actor[:256] or "anonymous", action=action, resource=resource[:512] or "-",
                      outcome=outcome, details={k: str(v)[:_VALUE] for k, v in details.items()})


def settings_digest(settings: Settings) -> str:
    """SHA-256 of the settings with every secret left out (SecretStr fields, the password of
    the ClickHouse URL)."""
    values: dict[str, Any] = {}
    for name, value in settings.model_dump(mode="python").items():
        if isinstance(value, SecretStr) or isinstance(getattr(settings, name), SecretStr):
            continue
        values[name] = str(value)
    url = urlsplit(settings.clickhouse_url)
    values["clickhouse_url"] = url._replace(netloc=url.hostname or "").geturl() if url.netloc else settings.clickhouse_url
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def config_event(settings: Settings, now: float | None = None) -> AuditEvent:
    return event(settings, "config.start", f"worker:{settings.app_id}", "success",
                 {"settings_sha256": settings_digest(settings), "app_id": settings.app_id}, now=now)


def access_event(settings: Settings, entry: AccessEntry) -> AuditEvent:
    """The audit event of one API access decision (who asked, and what)."""
    outcome = "denied" if entry.decision != "allow" else ("success" if entry.status < 400 else "failure")
    details = {"via": entry.via, "roles": ",".join(entry.roles), "permission": entry.permission,
               "status": entry.status, "reason": entry.reason, "remote": entry.remote}
    try:
        tenant = check_tenant(entry.tenant) if entry.tenant else PLATFORM
    except ValueError:  # a path naming no possible tenant: audited under the platform, never dropped
        tenant, details["asked_tenant"] = PLATFORM, entry.tenant
    return event(settings, "api.request", f"{entry.method} {entry.path}", outcome, details,
                 actor=entry.subject, tenant=tenant, now=entry.ts)


def records(settings: Settings, events: Iterable[AuditEvent]) -> list[tuple[str, bytes, bytes]]:
    """``(topic, key, value)`` records of ``events`` for the audit topic, keyed by tenant."""
    return [(settings.topic_audit, e.tenant.encode(), encode(e)) for e in events]


def send(settings: Settings, events: Iterable[AuditEvent]) -> None:
    """Send ``events`` to the audit topic now and wait for the broker (for the CLI)."""
    from core.kafka.producer import make_producer

    async def run() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(t, v, key=k) for t, k, v in records(settings, events)])
        finally:
            await producer.stop()

    asyncio.run(run())


def head_records(settings: Settings, heads: Iterable[msgspec.Struct]) -> list[tuple[str, bytes, bytes]]:
    """Signed tree heads as records of the checkpoint topic, keyed by tenant."""
    return [(settings.topic_audit_checkpoints, h.tenant.encode(), msgspec.json.encode(h)) for h in heads]
