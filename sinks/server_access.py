"""Server mode: every tenant reads as its own read-only ClickHouse user, under row policies.

On a ClickHouse server (``M1_CLICKHOUSE_URL``) tenant SQL (:meth:`sinks.clickhouse.Store.tenant_query`)
connects as the tenant's user ``m1_t_<tenant>``, so the server itself keeps the tenant to its rows,
whatever reached it:

- the user has the role ``m1_tenant_reader``, granted SELECT on the tenant-bearing tables of the
  store only (no other table, database, or table function grant: ``file()``, ``url()`` need
  grants the role does not have);
- a row policy ``m1_t_<tenant>`` on each of those tables lets it see ``tenant = '<tenant>'`` rows
  (``Tenant`` on the OTel tables), and a policy ``m1_unrestricted`` (``USING 1
  TO ALL EXCEPT m1_tenant_reader``) keeps every other user (the pipeline's, Grafana's) seeing all
  rows: once a table has a policy, users no policy names see no rows;
- its settings profile ``m1_t_<tenant>`` fixes ``readonly=1``, the query limits, the same
  ``additional_table_filters`` and the other tenant settings of the embedded store
  (:data:`sinks.clickhouse.TENANT_SETTINGS`) as CONST: neither the user nor its query's SETTINGS
  can change them.

Its password is derived, never stored: HMAC-SHA256 of ``M1_CLICKHOUSE_TENANT_SECRET`` and the user
name, so any process with the secret (the worker, ``m1 api``) can connect as any tenant, and the
server holds only its hash. (Grafana's read-only user is part of the deployment:
deploy/clickhouse/users.d; ``m1_unrestricted`` keeps it seeing every tenant's rows.)

Embedded chdb cannot store SQL-made users (``CREATE USER``: access denied; with access management
granted, no writable access storage), so there the Store's ``additional_table_filters`` under
``readonly=1`` do this job alone. The statements below are checked to parse on the engine
(``EXPLAIN AST``) and their conditions to filter real rows, in tests/security/test_server_access.py;
running them needs a server.

>>> tenant_user("acme")
'm1_t_acme'
>>> for statement in tenant_access_statements("m1", "acme", {"metric_points": "tenant"},
...                                          QueryLimits(30, 1 << 30, 100_000), "pw"):
...     print(statement[:90])
CREATE ROLE IF NOT EXISTS `m1_tenant_reader`
CREATE SETTINGS PROFILE OR REPLACE `m1_t_acme` SETTINGS optimize_move_to_prewhere = 0 CONS
CREATE USER OR REPLACE `m1_t_acme` IDENTIFIED WITH sha256_password BY 'pw' SETTINGS PROFIL
GRANT SELECT ON `m1`.`metric_points` TO `m1_tenant_reader`
GRANT `m1_tenant_reader` TO `m1_t_acme`
ALTER USER `m1_t_acme` DEFAULT ROLE `m1_tenant_reader`
CREATE ROW POLICY OR REPLACE `m1_unrestricted` ON `m1`.`metric_points` FOR SELECT USING 1 
CREATE ROW POLICY OR REPLACE `m1_t_acme` ON `m1`.`metric_points` FOR SELECT USING tenant =
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from cryptography.hazmat.primitives import hashes, hmac

from core.settings import Settings
from sinks.clickhouse import TENANT_SETTINGS, QueryLimits, Store, tenant_tables
from sinks.sql_guard import quote, tenant_condition
from core.tenant_names import check_tenant

TENANT_ROLE = "m1_tenant_reader"
UNRESTRICTED_POLICY = "m1_unrestricted"


def tenant_user(tenant: str) -> str:
    """The ClickHouse user of ``tenant`` (``ValueError`` for an invalid tenant name)."""
    return f"m1_t_{check_tenant(tenant)}"


def derive_password(secret: str, user: str) -> str:
    """``user``'s password: hex HMAC-SHA256 under ``secret`` (never stored; the server keeps a hash).

    >>> derive_password("s", "m1_t_acme") == derive_password("s", "m1_t_acme") != derive_password("s", "m1_t_globex")
    True
    """
    if not secret:
        raise ValueError("M1_CLICKHOUSE_TENANT_SECRET is not set: server-mode tenant users need it")
    mac = hmac.HMAC(secret.encode(), hashes.SHA256())
    mac.update(b"m1 clickhouse user\x00" + user.encode())
    return mac.finalize().hex()


def ident(name: str) -> str:
    """``name`` as a quoted ClickHouse identifier.

    >>> print(ident("m1_t_acme"), ident("a`b\\\\c"))
    `m1_t_acme` `a\\`b\\\\c`
    """
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def const_settings(values: Mapping[str, int | float | str]) -> str:
    """The SETTINGS of a profile fixing ``values`` (CONST: neither the user nor its queries can change them)."""
    return ", ".join(f"{name} = {quote(value) if isinstance(value, str) else value} CONST" for name, value in values.items())


def tenant_conditions(tenant_columns: Mapping[str, str], tenant: str) -> dict[str, str]:
    """Per table, the condition keeping ``tenant``'s rows (the row policies' and the filters')."""
    check_tenant(tenant)
    return {table: tenant_condition(column, tenant) for table, column in sorted(tenant_columns.items())}


def filters_setting(database: str, conditions: Mapping[str, str]) -> str:
    """``additional_table_filters`` for ``conditions`` as a profile takes it: a string literal
    holding the map (a profile accepts no map literal).

    >>> print(filters_setting("m1", {"t": "tenant = 'a'"}))
    '{\\'m1.t\\': \\'tenant = \\\\\\'a\\\\\\'\\'}'
    """
    return quote("{" + ", ".join(f"{quote(f'{database}.{table}')}: {quote(c)}" for table, c in conditions.items()) + "}")


def tenant_access_statements(database: str, tenant: str, tenant_columns: Mapping[str, str], limits: QueryLimits,
                             password: str) -> list[str]:
    """The statements creating (or re-creating) ``tenant``'s read-only user over the tables of
    ``tenant_columns`` (table -> expression holding a row's tenant), in the order to run them."""
    user, db, role = ident(tenant_user(tenant)), ident(database), ident(TENANT_ROLE)
    conditions = tenant_conditions(tenant_columns, tenant)
    return [
        f"CREATE ROLE IF NOT EXISTS {role}",
        f"CREATE SETTINGS PROFILE OR REPLACE {user} SETTINGS {const_settings({**TENANT_SETTINGS, **limits.settings()})}, "
        f"additional_table_filters = {filters_setting(database, conditions)} CONST",
        f"CREATE USER OR REPLACE {user} IDENTIFIED WITH sha256_password BY {quote(password)} SETTINGS PROFILE {user}",
        *(f"GRANT SELECT ON {db}.{ident(table)} TO {role}" for table in conditions),
        f"GRANT {role} TO {user}",
        f"ALTER USER {user} DEFAULT ROLE {role}",
        # first keep everyone else seeing every row, then restrict the tenant
        *(f"CREATE ROW POLICY OR REPLACE {ident(UNRESTRICTED_POLICY)} ON {db}.{ident(table)} FOR SELECT USING 1 "
          f"TO ALL EXCEPT {role}" for table in conditions),
        *(f"CREATE ROW POLICY OR REPLACE {user} ON {db}.{ident(table)} FOR SELECT USING {condition} TO {user}"
          for table, condition in conditions.items()),
    ]


def _secret(settings: Settings) -> str:
    secret = settings.clickhouse_tenant_secret.get_secret_value() if settings.clickhouse_tenant_secret else ""
    if not settings.clickhouse_url:
        raise RuntimeError("embedded chdb has no users: tenant SQL is filtered by the Store itself")
    if not secret:
        raise ValueError("M1_CLICKHOUSE_TENANT_SECRET is not set: server-mode tenant users need it")
    return secret


def apply_tenant_access(store: Store, tenant: str) -> str:
    """Create or refresh ``tenant``'s read-only ClickHouse user on ``store``'s server; returns the
    user's name. Runs on the store's own connection, which needs the grants to manage users,
    roles, profiles and row policies. Run it for each tenant again after a migration adds a table
    (a table added later is not granted: the tenant's queries on it fail, never leak).

    ``RuntimeError`` on embedded chdb (it has no users), ``ValueError`` without
    ``M1_CLICKHOUSE_TENANT_SECRET`` or for an invalid tenant name."""
    user = tenant_user(tenant)
    password = derive_password(_secret(store.settings), user)
    tables = tenant_tables(store.catalog())
    for statement in tenant_access_statements(store.database, tenant, tables, store.limits, password):
        store.command(statement)
    return user


def tenant_client(settings: Settings, tenant: str) -> Client:
    """A client of the configured server logged in as ``tenant``'s user (see :func:`apply_tenant_access`)."""
    client = clickhouse_connect.get_client(dsn=tenant_dsn(settings, tenant), autogenerate_session_id=False)
    client.database = settings.clickhouse_database
    return client


def tenant_dsn(settings: Settings, tenant: str) -> str:
    """The server's URL with ``tenant``'s user and derived password in place of the configured login.

    >>> from pydantic import SecretStr
    >>> s = Settings(clickhouse_url="https://admin:pw@db.internal:8443/?compress=1", clickhouse_tenant_secret=SecretStr("k"))
    >>> tenant_dsn(s, "acme").replace(derive_password("k", "m1_t_acme"), "<derived>")
    'https://m1_t_acme:<derived>@db.internal:8443/?compress=1'
    """
    user = tenant_user(tenant)
    url = urlsplit(settings.clickhouse_url)
    host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
    netloc = f"{user}:{derive_password(_secret(settings), user)}@{host}" + (f":{url.port}" if url.port else "")
    return urlunsplit(url._replace(netloc=netloc))
