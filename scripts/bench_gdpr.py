"""How long a GDPR export and an erasure take on a store of a given size (embedded chdb).

The store gets ``--rows`` metric points of one tenant spread over ``--subjects`` data subjects,
each point carrying its subject's pseudonym and one field encrypted with its key (as the
redactor writes them), then one subject is exported and erased ``--repeat`` times (a fresh subject
each time). The export scans every String column of every table; the erasure includes the wait
until the engine removed the key table's outdated parts (the key is off the disk).

    .venv/bin/python scripts/bench_gdpr.py --rows 1000000 --subjects 10000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import pyarrow as pa

from compliance.service import Compliance
from core.settings import Settings
from sinks.clickhouse import TS_TYPE, Store, connect

TENANT = "acme"
BATCH = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings(home=tempfile.mkdtemp(prefix="bench-gdpr-"))
    store = Store(connect(settings))
    store.migrate()

    async def audit(events: object) -> None:  # no broker here: the audit events are not what is measured
        return None

    compliance = Compliance(settings, store, audit)
    keys, pseudonymise = compliance.gdpr.keys, compliance.gdpr.pseudonymise
    subjects = [f"user{i}@example.com" for i in range(args.subjects)]
    started = time.perf_counter()
    tokens = {s: keys.encrypt(TENANT, s, f"condition of {s}") for s in subjects}
    print(f"{args.subjects} subject keys made in {time.perf_counter() - started:.1f} s")
    now = int(time.time() * 1000)
    for start in range(0, args.rows, BATCH):
        n = min(BATCH, args.rows - start)
        who = [subjects[(start + i) % len(subjects)] for i in range(n)]
        store.insert("metric_points", {
            "ts": pa.array([now - (start + i) * 1000 for i in range(n)], TS_TYPE), "tenant": [TENANT] * n,
            "region": ["eu"] * n, "service": ["clinic"] * n, "metric": ["visits"] * n,
            "labels": pa.array([[("patient", pseudonymise(TENANT, s)), ("condition", tokens[s])] for s in who],
                               pa.map_(pa.string(), pa.string())),
            "series": [f"acme|{s}" for s in who], "value": [1.0] * n, "score": pa.array([0.0] * n, pa.float32()),
            "is_anomaly": pa.array([0] * n, pa.uint8()), "ingested_at": pa.array([now] * n, TS_TYPE)})
    print(f"{args.rows} points stored")
    exports, erasures = [], []
    for subject in subjects[: args.repeat]:
        started = time.perf_counter()
        answer = asyncio.run(compliance.gdpr.run("export", TENANT, subject, actor="bench"))
        exports.append(time.perf_counter() - started)
        started = time.perf_counter()
        erased = asyncio.run(compliance.gdpr.run("erase", TENANT, subject, actor="bench"))
        erasures.append(time.perf_counter() - started)
        assert erased["key_destroyed"] and answer["rows"] == erased["rows_with_tokens"]
        print(f"{subject}: export {exports[-1]:.2f} s ({answer['rows']} rows), erase {erasures[-1]:.2f} s "
              f"(key off the disk after {erased['seconds']:.2f} s)")
    print(f"median export {statistics.median(exports):.2f} s, median erase {statistics.median(erasures):.2f} s "
          f"over {args.rows} rows, {args.subjects} subjects")
    store.close()


if __name__ == "__main__":
    main()
