"""Audit events and a chainer over a test store."""

from __future__ import annotations

from pathlib import Path

from audit.ingest import AuditIngest
from audit.signer import Signer
from compliance.policy import load_policy
from compliance.pseudonym import Pseudonymiser
from compliance.redact import Redactor
from schemas.events import AuditEvent, encode
from sinks.clickhouse import Store


#: The default personal-data policy, as the worker applies it (without subject keys: PHI is redacted).
REDACTOR = Redactor(load_policy(), Pseudonymiser(bytes(32)))


def payload(tenant: str, i: int, actor: str = "key:abc") -> bytes:
    return encode(AuditEvent(ts=1_700_000_000.0 + i / 1000, tenant=tenant, region="eu-west-1", actor=actor,
                             action="api.request", resource=f"GET /v1/tenants/{tenant}/anomalies?n={i}",
                             outcome="success", details={"status": "200", "n": str(i)}))


def ingest(store: Store, key: Path, **options: object) -> AuditIngest:
    return AuditIngest(store, Signer(key, store), redact=REDACTOR.event,
                       **{"checkpoint_events": 10, "checkpoint_seconds": 3600.0, **options})
