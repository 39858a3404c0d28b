"""Server-mode access statements (sinks/server_access.py), checked on the real engine as far as chdb
allows: chdb has no access management (CREATE USER is denied), so the statements are parsed by
the engine (EXPLAIN AST), and the conditions and the filter setting they carry are run on real rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st
from pydantic import SecretStr

from core.settings import Settings
from sinks.clickhouse import TS_TYPE, QueryLimits, Store, connect, tenant_tables
from sinks.server_access import (apply_tenant_access, filters_setting, tenant_access_statements, tenant_conditions,
                                 tenant_dsn, tenant_user)

LIMITS = QueryLimits(30, 1 << 30, 100_000)
EXPECTED_KINDS = {"CREATE ROLE": "CreateRoleQuery", "CREATE SETTINGS PROFILE": "CreateSettingsProfileQuery",
                  "CREATE USER": "CreateUserQuery", "ALTER USER": "CreateUserQuery", "GRANT": "GrantQuery",
                  "CREATE ROW POLICY": "CREATE ROW POLICY or ALTER ROW POLICY query"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(connect(Settings(home=tmp_path_factory.mktemp("access"))))
    store.migrate()
    rows = [("acme", 1.0)] * 3 + [("globex", 2.0)] * 5
    store.insert("metric_points", {"ts": pa.array([0] * len(rows), type=TS_TYPE), "tenant": [t for t, _ in rows],
                                   "series": [f"s{i}" for i in range(len(rows))], "value": [v for _, v in rows]})
    store.insert("otel_traces", {"TraceId": ["a", "b", "c"], "ResourceAttributes": pa.array(
        [[("tenant", "acme")], [("tenant", "globex")], [("tenant", "globex")]], type=pa.map_(pa.string(), pa.string()))})
    yield store
    store.close()


def test_every_statement_parses_on_the_engine(store: Store) -> None:
    tables = tenant_tables(store.catalog())
    assert {"metric_points", "anomalies", "otel_traces", "forecasts"} <= set(tables)
    statements = tenant_access_statements("m1", "acme-eu1", tables, store.limits, "p'w\\d")
    for statement in statements:
        kind = next(k for prefix, k in EXPECTED_KINDS.items() if statement.startswith(prefix))
        assert store.query(f"EXPLAIN AST {statement}").rows[0][0].split(" (")[0] == kind, statement
    policies = [s for s in statements if s.startswith("CREATE ROW POLICY OR REPLACE `m1_t_acme-eu1`")]
    assert len(policies) == len(tables)


def test_the_conditions_and_the_filter_setting_keep_the_tenants_rows(store: Store) -> None:
    """What the row policies and the profile's additional_table_filters say, run on real rows."""
    conditions = tenant_conditions(tenant_tables(store.catalog()), "acme")
    assert conditions["otel_traces"] == "Tenant = 'acme'"
    for table, expected in (("metric_points", 3), ("otel_traces", 1)):
        assert store.query(f"SELECT count() FROM m1.{table} WHERE {conditions[table]}").rows == [(expected,)]
        setting = filters_setting("m1", conditions)
        assert store.query(f"SELECT count() FROM {table} SETTINGS additional_table_filters = {setting}").rows == [(expected,)]


def test_the_profile_fixes_readonly_and_the_limits(store: Store) -> None:
    profile = tenant_access_statements("m1", "acme", {"metric_points": "tenant"}, store.limits, "pw")[1]
    for name, value in store.limits.settings().items():
        assert f"{name} = {value if name != 'result_overflow_mode' else repr(value)} CONST" in profile
    assert "readonly = 1 CONST" in profile and "additional_table_filters = '" in profile


HOSTILE = ["acme'", "acme`", "acme\\", "acme' OR 1 = 1 --", "acme`; DROP USER x; --", "ACME", "acme\n", "a", "",
           "acme.metrics", "acme_x", "1acme", "-acme", "a" * 33, "acme\x00", "ac me", "acmé"]


@settings(max_examples=200, deadline=None, database=None)
@given(tenant=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40)))
def test_hostile_tenant_names_are_refused(tenant: str) -> None:
    """Names go into identifiers and literals: only ^[a-z][a-z0-9-]{1,31}$ gets that far."""
    if re.fullmatch(r"[a-z][a-z0-9-]{1,31}", tenant):
        assert tenant_user(tenant) == f"m1_t_{tenant}"
        return
    for make in (lambda: tenant_user(tenant), lambda: tenant_conditions({"metric_points": "tenant"}, tenant),
                 lambda: tenant_access_statements("m1", tenant, {"metric_points": "tenant"}, LIMITS, "pw")):
        with pytest.raises(ValueError, match="invalid tenant name"):
            make()


def test_server_access_needs_a_server_and_a_secret(store: Store) -> None:
    with pytest.raises(RuntimeError, match="embedded chdb has no users"):
        apply_tenant_access(store, "acme")
    no_secret = Settings(clickhouse_url="http://u:p@127.0.0.1:8123")
    with pytest.raises(ValueError, match="M1_CLICKHOUSE_TENANT_SECRET"):
        tenant_dsn(no_secret, "acme")
    url = tenant_dsn(no_secret.model_copy(update={"clickhouse_tenant_secret": SecretStr("k")}), "acme")
    assert url.startswith("http://m1_t_acme:") and url.endswith("@127.0.0.1:8123") and ":p@" not in url
