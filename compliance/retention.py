"""Retention per retention class and tenant with ClickHouse TTL, and legal holds that stop it.

Every table holding a tenant's telemetry belongs to one retention class (:data:`TARGETS`):
``metrics`` (points and what the models made of them), ``traces`` (spans, OTel metrics and their
rollups), ``dead_letters``, ``access`` (the API's access log) and ``audit`` (the hash-chained
trail and its signed heads). ``M1_RETENTION_DAYS`` gives each class its days (audit: 6 years,
HIPAA 164.316(b)(2)), ``M1_RETENTION_TENANT_DAYS`` per-tenant exceptions; 0 keeps rows forever.

:func:`ttl` turns that into one TTL rule per table, applied with ``ALTER TABLE ... MODIFY TTL``
(:meth:`Retention.apply`; the worker applies it at start, the engine deletes expired rows at its
TTL merges, ``m1 compliance retention apply`` forces them now). A legal hold on a tenant
(:meth:`Retention.hold`, kept with its history in ``legal_holds``) excludes the tenant from every
rule at once; while any hold is on, rows whose tenant is unknown (dead letters of a shared topic)
are kept too, since they may be the held tenant's.

>>> ttl(TARGETS[0], 30, {}, [])
'addDays(toDateTime(ts), 30)'
>>> ttl(TARGETS[0], 30, {"acme": 7, "initech": 0}, ["globex"])
"addDays(toDateTime(ts), multiIf(tenant = 'acme', 7, 30)) DELETE WHERE tenant NOT IN ('globex', 'initech', '')"
>>> ttl(TARGETS[0], 0, {"acme": 7}, []), ttl(TARGETS[0], 0, {}, ["globex"])
("addDays(toDateTime(ts), multiIf(tenant = 'acme', 7, 0)) DELETE WHERE tenant IN ('acme')", None)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from m1.settings import Settings
from sinks.clickhouse import TS_TYPE, Store
from sinks.sql_guard import quote
from tenancy.names import check_tenant

#: The tenant of a dead letter: the first part of a tenant topic ('<tenant>.<topic>'), else unknown ('').
TOPIC_TENANT = "if(position(topic, '.') > 0, splitByChar('.', topic)[1], '')"


@dataclass(frozen=True)
class Target:
    """A table under retention: its class, the time column rows expire by, the expression of a row's tenant."""

    table: str
    retention_class: str
    ts: str
    tenant: str = "tenant"


TARGETS: tuple[Target, ...] = (
    Target("metric_points", "metrics", "ts"),
    Target("anomalies", "metrics", "ts"),
    Target("forecasts", "metrics", "ts"),
    Target("recommendations", "metrics", "ts"),
    Target("cost_projections", "metrics", "ts"),
    Target("otel_traces", "traces", "Timestamp", "Tenant"),
    Target("otel_metrics_gauge", "traces", "TimeUnix", "Tenant"),
    Target("otel_metrics_sum", "traces", "TimeUnix", "Tenant"),
    Target("otel_red_1m", "traces", "Minute", "Tenant"),
    Target("otel_traces_trace_id_ts", "traces", "End", "Tenant"),
    Target("bottlenecks", "traces", "analyzed_at"),
    Target("dead_letters", "dead_letters", "received_at", TOPIC_TENANT),
    Target("access_log", "access", "ts"),
    Target("audit_log", "audit", "ts"),
    Target("audit_checkpoints", "audit", "ts"),
)
CLASSES = tuple(dict.fromkeys(t.retention_class for t in TARGETS))


def class_days(settings: Settings) -> dict[str, int]:
    """Days of every class: the configured ones, the defaults for the rest. ``ValueError`` for an unknown class."""
    configured = settings.retention_days
    if unknown := sorted(set(configured) - set(CLASSES)):
        raise ValueError(f"M1_RETENTION_DAYS: unknown retention class {unknown[0]!r}; classes: {', '.join(CLASSES)}")
    defaults = Settings.model_fields["retention_days"].default
    return {c: _days(configured.get(c, defaults[c]), c) for c in CLASSES}


def tenant_days(settings: Settings) -> dict[str, dict[str, int]]:
    """Class -> tenant -> days, from ``M1_RETENTION_TENANT_DAYS`` ('tenant:class=days')."""
    out: dict[str, dict[str, int]] = {c: {} for c in CLASSES}
    for key, days in settings.retention_tenant_days.items():
        tenant, _, retention_class = key.partition(":")
        if retention_class not in out:
            raise ValueError(f"M1_RETENTION_TENANT_DAYS: {key!r} is not 'tenant:class' with a class of {', '.join(CLASSES)}")
        out[retention_class][check_tenant(tenant)] = _days(days, key)
    return out


def _days(value: Any, where: str) -> int:
    days = int(value)
    if days < 0:
        raise ValueError(f"retention of {where}: {days} days; give 0 (forever) or more")
    return days


def ttl(target: Target, days: int, overrides: dict[str, int], held: list[str]) -> str | None:
    """The table's TTL rule: rows expire ``days`` after their time (a tenant's own days where it has
    some), except those of held tenants, of tenants kept forever and, while any hold is on, of no
    known tenant. ``None``: nothing ever expires (no TTL)."""
    t = target.tenant
    expires = {tenant: d for tenant, d in sorted(overrides.items()) if d > 0 and tenant not in held}
    keep = sorted(set(held) | {tenant for tenant, d in overrides.items() if d == 0}) + ([""] if held else [])
    if days == 0 and not expires:
        return None
    after = (f"multiIf({', '.join(f'{t} = {quote(tenant)}, {d}' for tenant, d in expires.items())}, {days})"
             if expires else str(days))
    rule = f"addDays(toDateTime({target.ts}), {after})"
    if days == 0:
        return f"{rule} DELETE WHERE {t} IN ({', '.join(quote(x) for x in expires)})"
    if keep:
        return f"{rule} DELETE WHERE {t} NOT IN ({', '.join(quote(x) for x in keep)})"
    return rule


@dataclass(frozen=True)
class Hold:
    tenant: str
    since: str
    actor: str
    reason: str


class Retention:
    """The store's retention: legal holds, the TTL of every target table, applying it."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def holds(self) -> list[Hold]:
        """Tenants held now, with the newest hold's time, actor and reason."""
        rows = self.store.query(
            "SELECT tenant, argMax(held, at) AS h, toString(max(at)), argMax(actor, at), argMax(reason, at) "
            "FROM legal_holds GROUP BY tenant HAVING h ORDER BY tenant").rows
        return [Hold(tenant, since, actor, reason) for tenant, _, since, actor, reason in rows]

    def hold(self, tenant: str, held: bool, actor: str, reason: str = "") -> list[str]:
        """Put ``tenant`` on legal hold (or release it), then apply the TTL rules so they say so;
        returns the tables whose TTL changed."""
        self.store.insert("legal_holds", {"tenant": [check_tenant(tenant)], "held": [held],
                                          "at": pa.array([int(time.time() * 1000)], TS_TYPE),
                                          "actor": [actor], "reason": [reason[:1000]]})
        return self.apply(materialize=False)

    def plan(self) -> dict[str, str | None]:
        """Table -> the TTL rule the settings and holds give it (tables the store does not have are left out)."""
        days, tenants, held = class_days(self.settings), tenant_days(self.settings), [h.tenant for h in self.holds()]
        present = self.applied()
        return {t.table: ttl(t, days[t.retention_class], tenants[t.retention_class], held)
                for t in TARGETS if t.table in present}

    def applied(self) -> dict[str, str | None]:
        """Table -> the TTL the engine has now (its own formatting), for every target table present."""
        rows = self.store.query("SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() "
                                "AND name IN {names:Array(String)}", {"names": [t.table for t in TARGETS]}).rows
        return {name: _ttl_of(create) for name, create in rows}

    def apply(self, materialize: bool) -> list[str]:
        """Set every target table's TTL to :meth:`plan`; with ``materialize``, also delete the rows
        expired now (rewrites parts; otherwise the engine does it at its TTL merges). Returns the
        tables changed (all of them when materializing)."""
        changed = []
        applied = self.applied()
        for table, rule in self.plan().items():
            if rule is None:
                if applied[table] is not None:
                    self.store.command(f"ALTER TABLE {table} REMOVE TTL")
                    changed.append(table)
                continue
            self.store.command(f"ALTER TABLE {table} MODIFY TTL {rule} SETTINGS materialize_ttl_after_modify = 0")
            if materialize:  # MODIFY TTL materializes nothing when the rule is unchanged
                self.store.command(f"ALTER TABLE {table} MATERIALIZE TTL SETTINGS mutations_sync = 2")
            if materialize or self.applied()[table] != applied[table]:
                changed.append(table)
        return changed

    def show(self) -> dict[str, Any]:
        """The configuration, the holds and each table's TTL as planned and as the engine has it."""
        plan, applied = self.plan(), self.applied()
        return {"class_days": class_days(self.settings), "tenant_days": tenant_days(self.settings),
                "holds": [h.__dict__ for h in self.holds()],
                "tables": [{"table": t.table, "class": t.retention_class, "planned": plan[t.table], "applied": applied[t.table]}
                           for t in TARGETS if t.table in plan]}


def _ttl_of(create_table_query: str) -> str | None:
    """The TTL clause of a table's CREATE statement, as the engine formats it.

    >>> _ttl_of("CREATE TABLE m1.t (`x` Int8) ENGINE = MergeTree ORDER BY x TTL addDays(ts, 3) SETTINGS index_granularity = 8192")
    'addDays(ts, 3)'
    >>> _ttl_of("CREATE TABLE m1.t (`x` Int8) ENGINE = MergeTree ORDER BY x SETTINGS index_granularity = 8192") is None
    True
    """
    match = re.search(r" TTL (.*?)(?: SETTINGS .*)?$", create_table_query)
    return match.group(1) if match else None
