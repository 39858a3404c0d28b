"""Retention with ClickHouse TTL: per table group, per data class and per tenant, stopped by legal holds.

Two kinds of class, both in ``M1_RETENTION_DAYS`` (days; per tenant in ``M1_RETENTION_TENANT_DAYS``
as ``tenant:class=days``):

* **table groups** (:data:`TARGETS`): ``metrics`` (points and what the models made of them),
  ``traces`` (spans, OTel metrics and their rollups), ``dead_letters``, ``access`` (the API's
  access log) and ``audit`` (the hash-chained trail and its signed heads). Every row of the group
  expires after its days (audit: 6 years, HIPAA 164.316(b)(2)); 0 keeps rows forever.
* **data classes** of the personal-data policy (``direct_identifier``, ``quasi_identifier``,
  ``phi``, ``secret``): a row that carries a value of the class, in a field the policy classifies
  by name (a metric label, a span, resource or data point attribute, a label inside a series
  key), expires after the class's days, earlier than its group if shorter. 0 (the default): the
  group's days apply. Values the policy redacts are gone at ingest and need none; what is
  per class and what is per table is listed in docs/compliance.md, "Retention".

:func:`ttl` makes one TTL rule (``... DELETE WHERE ...``); a table's TTL is its group's rule and one
rule per data class it can carry (:func:`carries`), applied with ``ALTER TABLE ... MODIFY TTL``
(:meth:`Retention.apply`; the worker applies it at start and every :data:`REFRESH_SECONDS`, the
engine deletes expired rows at its TTL merges, ``m1 compliance retention apply`` forces them now).

The audit trail is deleted from its start only, never in the middle: up to the newest signed tree
head older than the retention (:meth:`Retention.audit_horizons`), which is kept with its anchor so
``m1 audit verify`` goes on from it (``audit.verify``). Its events are not deleted per data class
(that would break the chain); their encrypted values die with their subject's key instead.

A legal hold on a tenant (:meth:`Retention.hold`, kept with its history in ``legal_holds``) excludes
the tenant from every rule at once; while any hold is on, rows whose tenant is unknown (dead
letters of a shared topic) are kept too, since they may be the held tenant's.

>>> ttl(TARGETS[0], 30, {}, [])
'addDays(toDateTime(ts), 30)'
>>> ttl(TARGETS[0], 30, {"acme": 7, "initech": 0}, ["globex"])
"addDays(toDateTime(ts), multiIf(tenant = 'acme', 7, 30)) DELETE WHERE tenant NOT IN ('globex', 'initech', '')"
>>> ttl(TARGETS[0], 0, {"acme": 7}, []), ttl(TARGETS[0], 0, {}, ["globex"])
("addDays(toDateTime(ts), multiIf(tenant = 'acme', 7, 0)) DELETE WHERE tenant IN ('acme')", None)
>>> ttl(TARGETS[0], 5, {}, ["globex"], where="x = 1")
"addDays(toDateTime(ts), 5) DELETE WHERE (x = 1) AND tenant NOT IN ('globex', '')"
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from mode import Service

from compliance.policy import DATA_CLASSES, FieldRules, Policy, policy_of
from core.settings import Settings
from sinks.clickhouse import TS_TYPE, Store
from sinks.sql_guard import quote
from streams.tracing import in_thread
from core.tenant_names import check_tenant

log = logging.getLogger(__name__)

#: The tenant of a dead letter: the first part of a tenant topic ('<tenant>.<topic>'), else unknown ('').
TOPIC_TENANT = "if(position(topic, '.') > 0, splitByChar('.', topic)[1], '')"
DAY_MS = 86_400_000
#: RE2 prefix of a label key in a series key: past the four names, at the start or after a comma.
SERIES_LABELS = r"^(?:[^|]*\|){4}(?:.*,)?"
#: How often the worker applies the rules again (the audit trail's horizon moves with time).
REFRESH_SECONDS = 3600.0


@dataclass(frozen=True)
class MapField:
    """A map column whose keys the policy classifies: ``column`` (``Events.Attributes`` is an array
    of maps: ``array``) and where the policy lists its keys (:func:`rules_of`)."""

    column: str
    section: str
    array: bool = False


@dataclass(frozen=True)
class Target:
    """A table under retention: its group, the time column rows expire by, the expression of a
    row's tenant, the map columns holding classified values, whether it has a series key
    (``tenant|region|service|metric|k=v,...``), and for the audit tables the column that orders
    the trail (rows below a tenant's horizon may go)."""

    table: str
    retention_class: str
    ts: str
    tenant: str = "tenant"
    maps: tuple[MapField, ...] = ()
    series: bool = False
    trail: str = ""


_SPAN = (MapField("SpanAttributes", "otlp.span"), MapField("ResourceAttributes", "otlp.resource"),
         MapField("`Events.Attributes`", "otlp.span", array=True), MapField("`Links.Attributes`", "otlp.span", array=True))
_OTEL_METRIC = (MapField("Attributes", "otlp.metric"), MapField("ResourceAttributes", "otlp.resource"),
                MapField("ScopeAttributes", "otlp.resource"), MapField("`Exemplars.FilteredAttributes`", "otlp.metric", array=True))
TARGETS: tuple[Target, ...] = (
    Target("metric_points", "metrics", "ts", maps=(MapField("labels", "metric/1.labels"),), series=True),
    Target("anomalies", "metrics", "ts", series=True),
    Target("forecasts", "metrics", "ts", series=True),
    Target("recommendations", "metrics", "ts", series=True),
    Target("cost_projections", "metrics", "ts", series=True),
    Target("otel_traces", "traces", "Timestamp", "Tenant", maps=_SPAN),
    Target("otel_metrics_gauge", "traces", "TimeUnix", "Tenant", maps=_OTEL_METRIC),
    Target("otel_metrics_sum", "traces", "TimeUnix", "Tenant", maps=_OTEL_METRIC),
    Target("otel_red_1m", "traces", "Minute", "Tenant"),
    Target("otel_traces_trace_id_ts", "traces", "End", "Tenant"),
    Target("bottlenecks", "traces", "analyzed_at"),
    Target("dead_letters", "dead_letters", "received_at", TOPIC_TENANT),
    Target("access_log", "access", "ts"),
    Target("audit_log", "audit", "ts", trail="seq"),
    Target("audit_checkpoints", "audit", "ts", trail="tree_size"),
)
CLASSES = tuple(dict.fromkeys(t.retention_class for t in TARGETS))


def class_days(settings: Settings) -> dict[str, int]:
    """Days of every table group and data class: the configured ones, the defaults for the rest
    (a data class: 0, its group's days apply). ``ValueError`` for an unknown class."""
    configured = settings.retention_days
    if unknown := sorted(set(configured) - set(CLASSES) - set(DATA_CLASSES)):
        raise ValueError(f"M1_RETENTION_DAYS: unknown class {unknown[0]!r}; table groups: {', '.join(CLASSES)}; "
                         f"data classes: {', '.join(DATA_CLASSES)}")
    defaults = Settings.model_fields["retention_days"].default
    return {c: _days(configured.get(c, defaults.get(c, 0)), c) for c in CLASSES + DATA_CLASSES}


def tenant_days(settings: Settings) -> dict[str, dict[str, int]]:
    """Class -> tenant -> days, from ``M1_RETENTION_TENANT_DAYS`` ('tenant:class=days')."""
    out: dict[str, dict[str, int]] = {c: {} for c in CLASSES + DATA_CLASSES}
    for key, days in settings.retention_tenant_days.items():
        tenant, _, retention_class = key.partition(":")
        if retention_class not in out:
            raise ValueError(f"M1_RETENTION_TENANT_DAYS: {key!r} is not 'tenant:class' with a class of {', '.join(out)}")
        out[retention_class][check_tenant(tenant)] = _days(days, key)
    return out


def _days(value: Any, where: str) -> int:
    days = int(value)
    if days < 0:
        raise ValueError(f"retention of {where}: {days} days; give 0 (forever) or more")
    return days


def _after(target: Target, days: int, per_tenant: dict[str, int]) -> str:
    """The expiry time: ``days`` after the row's time, a tenant's own days where it has some."""
    after = (f"multiIf({', '.join(f'{target.tenant} = {quote(t)}, {d}' for t, d in sorted(per_tenant.items()))}, {days})"
             if per_tenant else str(days))
    return f"addDays(toDateTime({target.ts}), {after})"


def ttl(target: Target, days: int, overrides: dict[str, int], held: list[str], where: str | None = None) -> str | None:
    """A TTL rule: rows (those matching ``where`` if given) expire ``days`` after their time (a
    tenant's own days where it has some), except those of held tenants, of tenants kept forever
    and, while any hold is on, of no known tenant. ``None``: nothing ever expires."""
    t = target.tenant
    expires = {tenant: d for tenant, d in sorted(overrides.items()) if d > 0 and tenant not in held}
    keep = sorted(set(held) | {tenant for tenant, d in overrides.items() if d == 0}) + ([""] if held else [])
    if days == 0 and not expires:
        return None
    rule = _after(target, days, expires)
    also = f"({where}) AND " if where else ""
    if days == 0:
        return f"{rule} DELETE WHERE {also}{t} IN ({', '.join(quote(x) for x in expires)})"
    if keep:
        return f"{rule} DELETE WHERE {also}{t} NOT IN ({', '.join(quote(x) for x in keep)})"
    return f"{rule} DELETE WHERE {where}" if where else rule


def trail_ttl(target: Target, days: int, overrides: dict[str, int], horizons: dict[str, int]) -> str | None:
    """The audit tables' rule: a tenant's rows (heads) below its horizon, the size of the newest
    anchored head older than its retention, expire once their own time is that old too; nothing
    else does. ``None``: no tenant has a horizon.

    >>> trail_ttl(TARGETS[-2], 2192, {"acme": 30}, {"acme": 1000, "globex": 40})
    "addDays(toDateTime(ts), multiIf(tenant = 'acme', 30, 2192)) DELETE WHERE seq < multiIf(tenant = 'acme', 1000, tenant = 'globex', 40, 0)"
    """
    live = {t: h for t, h in sorted(horizons.items()) if h > 0}
    if not live:
        return None
    below = ", ".join(f"{target.tenant} = {quote(t)}, {h}" for t, h in live.items())
    return f"{_after(target, days, overrides)} DELETE WHERE {target.trail} < multiIf({below}, 0)"


def rules_of(policy: Policy, section: str) -> FieldRules:
    """The policy's rules for a :class:`MapField` section: ``otlp.span`` / ``otlp.resource`` /
    ``otlp.metric``, or ``<event type>.<map field>`` such as ``metric/1.labels``."""
    if section.startswith("otlp."):
        return getattr(policy, "otlp_" + section.removeprefix("otlp."))
    event_type, _, name = section.partition(".")
    found = policy.events[event_type].get(name)
    return found if isinstance(found, FieldRules) else FieldRules({})


def _key_regex(names: list[str]) -> str:
    """An RE2 alternation matching exactly ``names`` (``*`` globs: any characters).

    >>> print(_key_regex(["user.email", "patient_*"]))
    (?:user\\.email|patient_.*)
    """
    return "(?:" + "|".join(".*".join(re.escape(part) for part in name.split("*")) for name in names) + ")"


def carries(target: Target, policy: Policy, data_class: str) -> str | None:
    """A condition true for rows of ``target`` holding a value of ``data_class`` in a field the
    policy classifies by name; ``None`` if the table can hold none (or the class is redacted).

    >>> from compliance.policy import load_policy
    >>> print(carries(TARGETS[1], load_policy(), "phi"))  # a SQL string: the engine reads '\\\\|' as '\\|'
    match(series, '^(?:[^|]*\\\\|){4}(?:.*,)?(?:diagnosis|condition)=')
    """
    if policy.action(data_class) == "redact":
        return None
    tests = []
    for field in target.maps:
        names = rules_of(policy, field.section).names_of(data_class)
        if names:
            keys = f"arrayExists(k -> match(k, {quote('^' + _key_regex(names) + '$')}), mapKeys(m))"
            tests.append(f"arrayExists(m -> {keys}, {field.column})" if field.array
                         else keys.replace("mapKeys(m)", f"mapKeys({field.column})"))
    if target.series and (names := rules_of(policy, "metric/1.labels").names_of(data_class)):
        tests.append(f"match(series, {quote(SERIES_LABELS + _key_regex(names) + '=')})")
    return " OR ".join(tests) or None


@dataclass(frozen=True)
class Hold:
    tenant: str
    since: str
    actor: str
    reason: str
    since_ms: int


class Retention:
    """The store's retention: legal holds, the TTL of every target table, applying it."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def holds(self) -> list[Hold]:
        """Tenants held now, with the newest hold's time, actor and reason."""
        rows = self.store.query(
            "SELECT tenant, argMax(held, at) AS h, toString(max(at)), argMax(actor, at), argMax(reason, at), "
            "toUnixTimestamp64Milli(max(at)) FROM legal_holds GROUP BY tenant HAVING h ORDER BY tenant").rows
        return [Hold(tenant, since, actor, reason, int(ms)) for tenant, _, since, actor, reason, ms in rows]

    def hold(self, tenant: str, held: bool, actor: str, reason: str = "") -> list[str]:
        """Put ``tenant`` on legal hold (or release it), then apply the TTL rules so they say so;
        returns the tables whose TTL changed."""
        self.store.insert("legal_holds", {"tenant": [check_tenant(tenant)], "held": [held],
                                          "at": pa.array([int(time.time() * 1000)], TS_TYPE),
                                          "actor": [actor], "reason": [reason[:1000]]})
        return self.apply(materialize=False)

    def audit_expiry_ms(self, tenant: str, holds: list[Hold] | None = None) -> int | None:
        """The newest signing time (epoch ms) at which a tenant's tree head covers only events
        retention may have deleted: its audit retention before now, or before its legal hold
        began. ``None``: its audit events are kept forever."""
        days = tenant_days(self.settings)["audit"].get(tenant, class_days(self.settings)["audit"])
        if days == 0:
            return None
        since = {h.tenant: h.since_ms for h in (self.holds() if holds is None else holds)}
        return min(int(time.time() * 1000), since.get(tenant, 2 ** 62)) - days * DAY_MS

    def audit_horizons(self, holds: list[Hold]) -> dict[str, int]:
        """Tenant -> the size of its newest anchored head old enough for retention
        (:meth:`audit_expiry_ms`); held tenants have none (nothing of theirs is deleted)."""
        held = {h.tenant for h in holds}
        tenants = [r[0] for r in self.store.query("SELECT DISTINCT tenant FROM audit_checkpoints").rows]
        limits = {t: limit for t in tenants if t not in held and (limit := self.audit_expiry_ms(t, holds)) is not None}
        if not limits:
            return {}
        limit = f"multiIf({', '.join(f'tenant = {quote(t)}, {ms}' for t, ms in sorted(limits.items()))}, -1)"
        rows = self.store.query(f"SELECT tenant, max(tree_size) FROM audit_checkpoints WHERE chain_hash != '' "
                                f"AND toUnixTimestamp64Milli(ts) <= {limit} GROUP BY tenant").rows
        return {tenant: int(size) for tenant, size in rows}

    def plan(self) -> dict[str, str | None]:
        """Table -> the TTL rules the settings, policy and holds give it, comma-separated (tables
        the store does not have are left out)."""
        days, tenants = class_days(self.settings), tenant_days(self.settings)
        holds = self.holds()
        held = [h.tenant for h in holds]
        policy = policy_of(self.settings)
        present = self.applied()
        horizons = self.audit_horizons(holds) if "audit_checkpoints" in present else {}
        plan: dict[str, str | None] = {}
        for t in TARGETS:
            if t.table not in present:
                continue
            group = t.retention_class
            if t.trail:
                rules = [trail_ttl(t, days[group], tenants[group], horizons)]
            else:
                rules = [ttl(t, days[group], tenants[group], held)]
                rules += [ttl(t, days[c], tenants[c], held, where) for c in DATA_CLASSES
                          if (where := carries(t, policy, c)) is not None]
            plan[t.table] = ", ".join(r for r in rules if r) or None
        return plan

    def applied(self) -> dict[str, str | None]:
        """Table -> the TTL the engine has now (its own formatting), for every target table present."""
        rows = self.store.query("SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() "
                                "AND name IN {names:Array(String)}", {"names": [t.table for t in TARGETS]}).rows
        return {name: _ttl_of(create) for name, create in rows}

    def apply(self, materialize: bool) -> list[str]:
        """Set every target table's TTL to :meth:`plan`; with ``materialize``, also delete the rows
        expired now (rewrites parts; otherwise the engine does it at its TTL merges). Returns the
        tables changed (all of them when materializing).

        Parts written before a rule changed keep the TTL information of the old one, and TTL
        merges go by it: the audit tables, whose rule changes whenever their horizon moves, have it
        recalculated at once (a background mutation that rewrites no part:
        ``materialize_ttl_recalculate_only``, schemas/ddl/112_audit_anchors.sql); for the others,
        a changed rule reaches old parts with ``materialize``."""
        changed = []
        applied = self.applied()
        trail = {t.table for t in TARGETS if t.trail}
        for table, rule in self.plan().items():
            if rule is None:
                if applied[table] is not None:
                    self.store.command(f"ALTER TABLE {table} REMOVE TTL")
                    changed.append(table)
                continue
            self.store.command(f"ALTER TABLE {table} MODIFY TTL {rule} SETTINGS materialize_ttl_after_modify = 0")
            moved = self.applied()[table] != applied[table]
            if materialize:  # MODIFY TTL materializes nothing when the rule is unchanged
                self.store.command(f"ALTER TABLE {table} MATERIALIZE TTL SETTINGS mutations_sync = 2")
                if table in trail:  # recalculated only: the merge deletes
                    self.store.command(f"OPTIMIZE TABLE {table} FINAL")
            elif moved and table in trail:
                self.store.command(f"ALTER TABLE {table} MATERIALIZE TTL")
            if materialize or moved:
                changed.append(table)
        return changed

    def show(self) -> dict[str, Any]:
        """The configuration, the holds and each table's TTL as planned and as the engine has it."""
        plan, applied = self.plan(), self.applied()
        return {"class_days": class_days(self.settings), "tenant_days": tenant_days(self.settings),
                "holds": [h.__dict__ for h in self.holds()],
                "tables": [{"table": t.table, "class": t.retention_class, "planned": plan[t.table], "applied": applied[t.table]}
                           for t in TARGETS if t.table in plan]}


class RetentionClock(Service):
    """Applies the rules every :data:`REFRESH_SECONDS` in the worker (the audit horizons move as
    heads grow old); TTL merges then delete what expired."""

    def __init__(self, retention: Retention, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retention = retention

    @Service.timer(REFRESH_SECONDS)
    async def _refresh(self) -> None:
        try:
            await in_thread(self.retention.apply, False)
        except Exception:  # the next tick tries again; the rules in force stay
            log.exception("retention: applying the TTL rules failed")


def _ttl_of(create_table_query: str) -> str | None:
    """The TTL clause of a table's CREATE statement, as the engine formats it.

    >>> _ttl_of("CREATE TABLE m1.t (`x` Int8) ENGINE = MergeTree ORDER BY x TTL addDays(ts, 3) SETTINGS index_granularity = 8192")
    'addDays(ts, 3)'
    >>> _ttl_of("CREATE TABLE m1.t (`x` Int8) ENGINE = MergeTree ORDER BY x SETTINGS index_granularity = 8192") is None
    True
    """
    match = re.search(r" TTL (.*?)(?: SETTINGS .*)?$", create_table_query)
    return match.group(1) if match else None
