"""Tenant data as listings: one declaration per resource gives its SQL, its parameters and its schema.

Every listing's query is built from fixed text plus the declared parameters' conditions and
always filters on the tenant (``tenant = {tenant:String}``, or ``Tenant`` in the OTel tables,
materialised from their resource attribute ``tenant``); every value is bound by the engine through a
``{name:Type}`` placeholder, never pasted into the text.

>>> print(ANOMALIES.sql({"severity": "critical", "since": None, "limit": 5}))
SELECT ts, region, service, metric, series, value, score, severity, detector FROM anomalies FINAL WHERE tenant = {tenant:String} AND severity = {severity:String} ORDER BY ts DESC LIMIT {limit:UInt32}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from api.params import Choice, Limit, Param, Text, Time

#: JSON Schema of a column's values, by the short names the listings use.
JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "time": {"type": "string", "format": "date-time"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "numbers": {"type": "object", "additionalProperties": {"type": "number"}},
    "strings": {"type": "array", "items": {"type": "string"}},
}


@dataclass(frozen=True)
class Listing:
    """Rows of one table that belong to the path's tenant.

    ``select`` is the column list (its output names are the keys of ``columns``, which maps
    them to :data:`JSON_TYPES`); ``where`` holds fixed conditions; ``params`` the caller's
    filters (each adds its ``sql`` when given) and a :class:`~api.params.Limit`."""

    table: str
    select: str
    columns: dict[str, str]
    order: str
    params: tuple[Param, ...]
    tenant_column: str = "tenant"
    final: bool = True
    where: tuple[str, ...] = ()
    group_by: str = ""
    description: str = field(default="", compare=False)

    def sql(self, values: dict[str, Any]) -> str:
        """The query for the checked parameter ``values`` (conditions of the ones given)."""
        conditions = [f"{self.tenant_column} = {{tenant:String}}", *self.where]
        conditions += [p.sql for p in self.params if p.sql and values.get(p.name) is not None]
        return " ".join(filter(None, [
            f"SELECT {self.select} FROM {self.table}{' FINAL' if self.final else ''}",
            "WHERE " + " AND ".join(conditions),
            f"GROUP BY {self.group_by}" if self.group_by else "",
            f"ORDER BY {self.order} LIMIT {{limit:UInt32}}",
        ]))

    def response_schema(self) -> dict[str, Any]:
        """JSON Schema of the answer: ``{"items": [row, ...]}``."""
        row = {"type": "object", "properties": {name: JSON_TYPES[kind] for name, kind in self.columns.items()},
               "required": list(self.columns)}
        return {"type": "object", "properties": {"items": {"type": "array", "items": row}}, "required": ["items"]}


def since(column: str) -> Time:
    return Time("since", f"Only rows with {column} at or after this time.",
                sql=f"{column} >= {{since:DateTime64(3, 'UTC')}}")


def until(column: str) -> Time:
    return Time("until", f"Only rows with {column} before this time.", sql=f"{column} < {{until:DateTime64(3, 'UTC')}}")


def equals(name: str, column: str, description: str, max_length: int = 128) -> Text:
    """A filter on one string column; names are bounded like the events' (schemas.events)."""
    return Text(name, description, sql=f"{column} = {{{name}:String}}", max_length=max_length,
                pattern=r"[A-Za-z0-9_.:\-/]+")


#: A series key (tenant|region|service|metric|labels) is longer and holds label values.
SERIES = Text("series", "Series key, e.g. acme|eu|api|rps|host=a.", sql="series = {series:String}", max_length=1024)
SERVICE = equals("service", "service", "Only this service.")
METRIC = equals("metric", "metric", "Only this metric.")

SERIES_LIST = Listing(
    "metric_points", "series, region, service, metric, max(ts) AS last_ts",
    {"series": "string", "region": "string", "service": "string", "metric": "string", "last_ts": "time"},
    order="series", params=(METRIC, SERVICE, since("ts"), Limit(fallback=1000)), final=False,
    group_by="series, region, service, metric",
)
POINTS = Listing(
    "metric_points", "ts, value, score, is_anomaly",
    {"ts": "time", "value": "number", "score": "number", "is_anomaly": "integer"},
    order="ts DESC",
    params=(replace(SERIES, required=True), since("ts"), until("ts"), Limit(fallback=1000, maximum=100_000)),
)
ANOMALIES = Listing(
    "anomalies", "ts, region, service, metric, series, value, score, severity, detector",
    {"ts": "time", "region": "string", "service": "string", "metric": "string", "series": "string",
     "value": "number", "score": "number", "severity": "string", "detector": "string"},
    order="ts DESC",
    params=(since("ts"), until("ts"), SERIES, SERVICE, METRIC,
            Choice("severity", "Only this severity.", sql="severity = {severity:String}", choices=("warning", "critical")),
            Limit()),
)
FORECASTS = Listing(
    "forecasts", "ts, target_ts, region, service, metric, series, horizon, point, lower, upper, coverage, model",
    {"ts": "time", "target_ts": "time", "region": "string", "service": "string", "metric": "string",
     "series": "string", "horizon": "integer", "point": "number", "lower": "number", "upper": "number",
     "coverage": "number", "model": "string"},
    order="ts DESC, series, horizon", params=(since("ts"), until("ts"), SERIES, SERVICE, METRIC, Limit()),
)
RECOMMENDATIONS = Listing(
    "recommendations", "ts, window_end, region, service, metric, series, replicas, planned_load, current_load, "
    "capacity_per_replica, headroom",
    {"ts": "time", "window_end": "time", "region": "string", "service": "string", "metric": "string",
     "series": "string", "replicas": "integer", "planned_load": "number", "current_load": "number",
     "capacity_per_replica": "number", "headroom": "number"},
    order="ts DESC, series", params=(since("ts"), until("ts"), SERIES, SERVICE, METRIC, Limit()),
)
COSTS = Listing(
    "cost_projections", "ts, region, service, metric, series, period, until, spent, point, lower, upper, total, "
    "coverage, model",
    {"ts": "time", "region": "string", "service": "string", "metric": "string", "series": "string",
     "period": "string", "until": "time", "spent": "number", "point": "number", "lower": "number",
     "upper": "number", "total": "number", "coverage": "number", "model": "string"},
    order="ts DESC, series, period",
    params=(since("ts"), until("ts"), SERIES, SERVICE,
            Choice("period", "Only projections to the end of this period.", sql="period = {period:String}",
                   choices=("day", "month")),
            Limit()),
)
BOTTLENECKS = Listing(
    "bottlenecks", "analyzed_at, entry_service, window_seconds, traces, mean_ms, kind, rank, service, operation, "
    "share, critical_ms, on_path_traces, rule, message, evidence",
    {"analyzed_at": "time", "entry_service": "string", "window_seconds": "integer", "traces": "integer",
     "mean_ms": "number", "kind": "string", "rank": "integer", "service": "string", "operation": "string",
     "share": "number", "critical_ms": "number", "on_path_traces": "integer", "rule": "string",
     "message": "string", "evidence": "numbers"},
    order="analyzed_at DESC, entry_service, kind, rank",
    params=(since("analyzed_at"), until("analyzed_at"),
            equals("entry_service", "entry_service", "Only reports of this entry service."),
            Choice("kind", "Only bottlenecks or only suggestions.", sql="kind = {kind:String}",
                   choices=("bottleneck", "suggestion")),
            Limit()),
)
TRACES = Listing(
    "otel_traces", "TraceId AS trace_id, ServiceName AS service, SpanName AS operation, Timestamp AS start, "
    "Duration / 1e6 AS duration_ms, StatusCode AS status",
    {"trace_id": "string", "service": "string", "operation": "string", "start": "time", "duration_ms": "number",
     "status": "string"},
    order="Duration DESC, TraceId", tenant_column="Tenant", where=("ParentSpanId = ''",),
    params=(since("Timestamp"), until("Timestamp"),
            equals("service", "ServiceName", "Only traces entering at this service."),
            Limit()),
)
SPANS = Listing(
    "otel_traces", "Timestamp AS start, SpanId AS span_id, ParentSpanId AS parent_span_id, ServiceName AS service, "
    "SpanName AS operation, SpanKind AS kind, Duration / 1e6 AS duration_ms, StatusCode AS status, "
    "StatusMessage AS status_message, SpanAttributes AS attributes",
    {"start": "time", "span_id": "string", "parent_span_id": "string", "service": "string", "operation": "string",
     "kind": "string", "duration_ms": "number", "status": "string", "status_message": "string", "attributes": "labels"},
    order="Timestamp, SpanId", tenant_column="Tenant",
    params=(Text("trace_id", "Trace id: 32 lower-case hex digits.", where="path", sql="TraceId = {trace_id:String}",
                 max_length=32, pattern="[0-9a-f]{32}"),
            Limit(fallback=1000)),
)
AUDIT = Listing(
    "access_log", "ts, subject, via, roles, method, path, permission, decision, status, reason, remote, duration_ms",
    {"ts": "time", "subject": "string", "via": "string", "roles": "strings", "method": "string", "path": "string",
     "permission": "string", "decision": "string", "status": "integer", "reason": "string", "remote": "string",
     "duration_ms": "number"},
    order="ts DESC", final=False,
    params=(since("ts"), until("ts"),
            Choice("decision", "Only allowed or only denied requests.", sql="decision = {decision:String}",
                   choices=("allow", "deny")),
            Text("subject", "Only this caller (key:<id> or a token's subject).", sql="subject = {subject:String}"),
            Limit()),
)
