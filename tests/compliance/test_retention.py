"""Retention on the real engine: a short TTL deletes a normal tenant's expired rows, a held tenant's
stay until the hold is released, per-tenant exceptions and 'forever' hold, the settings are checked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from compliance.retention import TARGETS, Retention, class_days, tenant_days
from core.settings import Settings
from sinks.clickhouse import TS_TYPE, Store, connect

DAY_MS = 86_400_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(connect(Settings(home=tmp_path)))
    store.migrate()
    yield store
    store.close()


def points(store: Store, rows: list[tuple[str, int]], label: str = "") -> None:
    """One point per (tenant, age in days), with the label ``label`` (a pseudonymised value) if given;
    its series is ``tenant|age`` (plus ``|label``)."""
    now = int(time.time() * 1000)
    n = len(rows)
    labels = [[(label, "pii:0123456789abcdef")] if label else []] * n
    store.insert("metric_points", {
        "ts": pa.array([now - age * DAY_MS for _, age in rows], TS_TYPE), "tenant": [t for t, _ in rows],
        "region": ["eu"] * n, "service": ["api"] * n, "metric": ["rps"] * n,
        "labels": pa.array(labels, pa.map_(pa.string(), pa.string())),
        "series": [f"{t}|{age}" + (f"|{label}" if label else "") for t, age in rows], "value": [1.0] * n,
        "score": pa.array([0.0] * n, pa.float32()), "is_anomaly": pa.array([0] * n, pa.uint8()),
        "ingested_at": pa.array([now] * n, TS_TYPE)})


def dead_letters(store: Store, topics: list[str], age: int) -> None:
    now = int(time.time() * 1000)
    store.insert("dead_letters", {"received_at": pa.array([now - age * DAY_MS] * len(topics), TS_TYPE), "topic": topics,
                                  "partition": [0] * len(topics), "offset": list(range(len(topics))),
                                  "reason": ["x"] * len(topics), "payload": ["p"] * len(topics)})


def kept(store: Store) -> list[tuple[str, str]]:
    return store.query("SELECT tenant, series FROM metric_points FINAL ORDER BY tenant, series").rows


def test_ttl_deletes_expired_rows_but_not_a_held_tenants(store: Store, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, retention_days={"metrics": 5, "dead_letters": 5})
    retention = Retention(settings, store)
    points(store, [("acme", 10), ("acme", 1), ("globex", 10), ("globex", 1), ("initech", 10)])
    dead_letters(store, ["acme.metrics", "globex.metrics", "metrics"], age=10)
    retention.hold("globex", True, actor="legal@example.com", reason="case 42")
    assert [h.tenant for h in retention.holds()] == ["globex"]
    retention.apply(materialize=True)
    assert kept(store) == [("acme", "acme|1"), ("globex", "globex|1"), ("globex", "globex|10")]
    # the unknown tenant's dead letter ('metrics') may be the held tenant's: kept while a hold is on
    assert store.query("SELECT topic FROM dead_letters ORDER BY topic").rows == [("globex.metrics",), ("metrics",)]
    applied = retention.applied()
    assert all(applied[t.table] for t in TARGETS if not t.trail), applied  # every table but the trail's has a TTL
    assert "globex" in applied["metric_points"] and applied["audit_log"] is None  # no signed head is old yet

    retention.hold("globex", False, actor="legal@example.com", reason="case closed")
    assert retention.holds() == []
    retention.apply(materialize=True)
    assert kept(store) == [("acme", "acme|1"), ("globex", "globex|1")]
    assert store.query("SELECT count() FROM dead_letters").rows == [(0,)]
    history = store.query("SELECT tenant, held, reason FROM legal_holds ORDER BY at").rows
    assert history == [("globex", True, "case 42"), ("globex", False, "case closed")]


def test_tenant_exceptions_and_forever(store: Store, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, retention_days={"metrics": 0},
                        retention_tenant_days={"acme:metrics": 5, "globex:traces": 1})
    points(store, [("acme", 10), ("acme", 1), ("globex", 10)])
    Retention(settings, store).apply(materialize=True)
    assert kept(store) == [("acme", "acme|1"), ("globex", "globex|10")]  # only acme's rows expire
    forever = Settings(home=tmp_path, retention_days={"metrics": 3}, retention_tenant_days={"acme:metrics": 0})
    Retention(forever, store).apply(materialize=False)
    points(store, [("acme", 10)])  # (an insert drops the rows its table's TTL has expired already)
    Retention(forever, store).apply(materialize=True)
    assert kept(store) == [("acme", "acme|1"), ("acme", "acme|10")]


def test_rows_carrying_a_data_class_expire_after_its_days(store: Store, tmp_path: Path) -> None:
    """Per data class and tenant: PHI 3 days (globex: no limit of its own), quasi-identifiers 20 days,
    the metrics group 400; a held tenant keeps everything. Labels, series keys and span attributes."""
    settings = Settings(home=tmp_path, retention_days={"metrics": 400, "traces": 400, "phi": 3, "quasi_identifier": 20},
                        retention_tenant_days={"globex:phi": 0, "acme:quasi_identifier": 10})
    tenants = [(t, age) for t in ("acme", "globex", "initech") for age in (5, 15, 30)]
    points(store, tenants, label="diagnosis")
    points(store, tenants, label="client_ip")
    points(store, tenants)
    now = int(time.time() * 1000)
    series = [f"{t}|eu|api|rps|client_ip=pii:1,diagnosis=pii:2" if i % 2 else f"{t}|eu|api|rps|host=h1" for i, (t, _) in enumerate(tenants)]
    store.insert("anomalies", {"ts": pa.array([now - a * DAY_MS for _, a in tenants], TS_TYPE), "tenant": [t for t, _ in tenants],
                               "series": series})
    store.command("INSERT INTO otel_traces (Timestamp, ResourceAttributes, SpanAttributes) VALUES "
                  "(now64(9) - INTERVAL 5 DAY, {'tenant': 'acme'}, {'diagnosis': 'enc:v1:x'}), "
                  "(now64(9) - INTERVAL 5 DAY, {'tenant': 'acme'}, {'http.route': '/x'})")
    retention = Retention(settings, store)
    retention.hold("initech", True, actor="legal@example.com", reason="case 9")
    retention.apply(materialize=True)

    kept = store.query("SELECT tenant, series FROM metric_points ORDER BY tenant, series").rows
    expected = [(t, f"{t}|{age}" + suffix) for t in ("acme", "globex", "initech") for age in (5, 15, 30)
                for suffix, limit in (("", 400), ("|diagnosis", 400 if t in ("globex", "initech") else 3),
                                      ("|client_ip", 400 if t == "initech" else 10 if t == "acme" else 20))
                if age <= limit]
    assert sorted(kept) == sorted(expected)
    anomalies = store.query("SELECT tenant, intDiv(toUnixTimestamp(now()) - toUnixTimestamp(ts), 86400) FROM anomalies "
                            "WHERE position(series, 'diagnosis') > 0 ORDER BY tenant, ts DESC").rows
    # labelled: acme 15 (PHI: 3 days), globex 5 and 30 (quasi-identifier: 20 days), initech 15 (held)
    assert anomalies == [("globex", 5), ("initech", 15)]
    assert store.query("SELECT count() FROM anomalies WHERE position(series, 'host') > 0").rows == [(5,)]  # all kept
    assert store.query("SELECT SpanAttributes FROM otel_traces").rows == [({"http.route": "/x"},)]
    assert store.query("SELECT count() FROM metric_points WHERE tenant = 'initech'").rows == [(9,)]


def test_audit_defaults_to_six_years_and_bad_settings_are_refused(tmp_path: Path) -> None:
    assert class_days(Settings(home=tmp_path))["audit"] >= 6 * 365
    assert class_days(Settings(home=tmp_path, retention_days={"audit": 3650}))["audit"] == 3650
    with pytest.raises(ValueError, match="unknown class 'logs'"):
        class_days(Settings(home=tmp_path, retention_days={"logs": 3}))
    with pytest.raises(ValueError, match="tenant:class"):
        tenant_days(Settings(home=tmp_path, retention_tenant_days={"acme": 3}))
    with pytest.raises(ValueError, match="0 \\(forever\\) or more"):
        class_days(Settings(home=tmp_path, retention_days={"traces": -1}))
