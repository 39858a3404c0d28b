"""Audit trail throughput: in-process ingest (decode, dedupe, chain, insert, sign) and verification.

    .venv/bin/python scripts/bench_audit.py [--events 200000] [--tenants 4] [--batch 5000] [--dedupe-window 100000]
                                            [--no-redaction] [--subjects 50]

Ingest: ``AuditIngest.process`` on batches of ``audit/1`` JSON records as they come from Kafka,
into a fresh embedded store, a signed tree head every 1,000 events per tenant (the default),
with the worker's personal-data redaction (default policy, pseudonyms, PHI encrypted with real
subject keys in the store) unless ``--no-redaction``. Every event has a client IP in its details
(pseudonymised), 1 in 10 an email address, 4 in 100 a diagnosis of one of ``--subjects`` users per
tenant (encrypted under the user's key, made on first use).
The broker is left out: the worker's Kafka read runs at 30x this rate (docs/benchmarks.md).
Verification: ``verify_tenant`` per tenant (read the rows from the engine, re-hash the chain,
recompute the root at every signed head, check each signature), and the same without the read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from audit import keys, log
from audit.chain import verify_columns
from audit.ingest import AuditIngest
from audit.merkle import Frontier
from audit.signer import Signer
from audit.verify import verify_tenant
from compliance.redact import Redactor
from core.settings import Settings
from schemas.events import AuditEvent, encode
from sinks.clickhouse import Store, connect


def records(n: int, tenants: int, subjects: int = 50) -> list[bytes]:
    return [encode(AuditEvent(ts=1_700_000_000.0 + i / 1000, tenant=f"t{i % tenants}", region="eu-west-1",
                              actor=f"key:{i % 97:012x}", action="api.request",
                              resource=f"GET /v1/tenants/t{i % tenants}/anomalies?limit={i % 100}", outcome="success",
                              details={"status": "200", "via": "api_key", "permission": "anomalies:read",
                                       "remote": f"10.0.{i % 250}.{i % 199}", **personal(i, subjects)}))
            for i in range(n)]


def personal(i: int, subjects: int) -> dict[str, str]:
    """The personal data of event ``i``: an email in 1 of 10 events; with ``subjects`` (per tenant),
    a user's diagnosis in 4 of 100."""
    return {**({"email": f"user{i % 500}@example.com"} if i % 10 == 0 else {}),
            **({"user_id": f"u{i // 100 % subjects}", "diagnosis": f"condition {i % 7}"}
               if subjects and i // 4 % 25 == 0 else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--dedupe-window", type=int, default=100_000,
                        help="Ids per tenant in memory; a longer chain looks the others up in the table.")
    parser.add_argument("--no-redaction", action="store_true", help="Chain the events as they come (the cost of the policy).")
    parser.add_argument("--subjects", type=int, default=50,
                        help="Data subjects per tenant with a diagnosis (encrypted: a key made for each); 0: no PHI.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    settings = Settings(home=home)
    store = Store(connect(settings))
    store.migrate()
    key = home / "audit-signing.key"
    redact = (lambda event: event) if args.no_redaction else Redactor.from_settings(settings, store).event
    ingest = AuditIngest(store, Signer(key, store), dedupe_window=args.dedupe_window, redact=redact)
    payloads = records(args.events, args.tenants, args.subjects)
    start, cpu = time.perf_counter(), time.process_time()
    heads = 0
    for i in range(0, len(payloads), args.batch):
        heads += len(ingest.process(payloads[i:i + args.batch]).heads)
    ingest_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    print(f"ingest: {args.events:,} events, {args.tenants} tenants, batches of {args.batch}, dedupe window "
          f"{args.dedupe_window:,}, redaction {'off' if args.no_redaction else 'on'}: {ingest_s:.2f} s = "
          f"{args.events / ingest_s:,.0f} events/s, {args.events / cpu_s:,.0f} per CPU second ({heads} signed heads, "
          f"{store.query('SELECT count() FROM subject_keys').rows[0][0]} subject keys made)")

    trusted = keys.trusted_keys(key)
    start, cpu = time.perf_counter(), time.process_time()
    for t in range(args.tenants):
        assert verify_tenant(store, f"t{t}", trusted).problem is None
    verify_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    print(f"verify (read from the engine + chain + heads): {args.events / verify_s:,.0f} events/s, "
          f"{args.events / cpu_s:,.0f} per CPU second")

    columns = [log.columns(store, f"t{t}") for t in range(args.tenants)]
    start = time.perf_counter()
    for c in columns:
        problem, leaves = verify_columns(c["seq"], c["id"], c["event"], c["prev_hash"], c["hash"])
        assert problem is None
        frontier = Frontier()
        frontier.extend(leaves)
        frontier.root()
    pure_s = time.perf_counter() - start
    print(f"verify (rows in memory: chain + Merkle root): {args.events / pure_s:,.0f} events/s")
    store.close()


if __name__ == "__main__":
    main()
