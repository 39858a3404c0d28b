"""Reading spans back from ClickHouse's ``otel_traces`` (tables of ``schemas/ddl/020_otel.sql``)."""

from __future__ import annotations

from typing import Any

from traces.model import Span, span_from_row

# Whole traces (every service's spans) that touched the service in the window. The id
# lookup table bounds the scan of otel_traces to the traces' time range; its times are
# whole seconds, hence the one-second margin. FINAL drops copies left by Kafka replays.
# Timestamp is selected as integer nanoseconds, so the filter names the column as t.Timestamp.
# Spans stamped more than 5 minutes in the future (clock skew beyond that, or replayed test
# data) are not part of "the last N minutes". With a tenant, only that tenant's spans (Tenant,
# materialised from the resource attribute tenant: schemas/ddl/070_tenant_keys.sql) and id
# ranges are read: another tenant's spans with the same trace ids take no part.
_TENANT = "Tenant = {tenant:String}"
_WINDOW_SPANS = """
WITH ids AS (
    SELECT DISTINCT TraceId FROM otel_traces
    WHERE ServiceName = {service:String}
      AND Timestamp >= now64(9) - toIntervalSecond({since:UInt32})
      AND Timestamp <= now64(9) + toIntervalSecond(300)
      AND /*tenant*/
    LIMIT {max_traces:UInt32}
),
bounds AS (
    SELECT min(Start) AS lo, max(End) + 1 AS hi FROM otel_traces_trace_id_ts WHERE TraceId IN ids AND /*tenant*/
)
SELECT toUnixTimestamp64Nano(Timestamp) AS Timestamp, TraceId, SpanId, ParentSpanId, ServiceName,
       SpanName, SpanKind, Duration, StatusCode, SpanAttributes
FROM otel_traces AS t FINAL
WHERE TraceId IN ids
  AND t.Timestamp BETWEEN (SELECT lo FROM bounds) AND (SELECT hi FROM bounds)
  AND /*tenant*/
"""


def _only(sql: str, tenant: str | None) -> str:
    """``sql`` with its ``/*tenant*/`` conditions naming ``tenant``, or always true for every tenant."""
    return sql.replace("/*tenant*/", "1" if tenant is None else _TENANT)


def _window_parameters(service: str, since_seconds: int, max_traces: int, tenant: str | None) -> dict[str, Any]:
    return {"service": service, "since": since_seconds, "max_traces": max_traces, "tenant": tenant or ""}


def load_spans(client: Any, service: str, since_seconds: int, max_traces: int = 10_000,
               tenant: str | None = None) -> list[Span]:
    """Spans of up to ``max_traces`` traces in which ``service`` had a span in the last ``since_seconds``
    (only ``tenant``'s spans when one is given).

    ``client`` is a clickhouse-connect client whose current database holds the OTel tables.
    """
    result = client.query(_only(_WINDOW_SPANS, tenant),
                          parameters=_window_parameters(service, since_seconds, max_traces, tenant))
    return [span_from_row(row) for row in result.named_results()]


_ENTRY_SERVICES = """
SELECT DISTINCT Tenant AS tenant, ServiceName FROM otel_traces
WHERE ParentSpanId = '' AND Timestamp >= now64(9) - toIntervalSecond({since:UInt32})
  AND Timestamp <= now64(9) + toIntervalSecond(300)
  AND /*tenant*/
ORDER BY tenant, ServiceName
"""


def load_spans_from_store(store: Any, service: str, since_seconds: int, max_traces: int = 10_000,
                          tenant: str | None = None) -> list[Span]:
    """``load_spans`` through a ``sinks.clickhouse.Store`` (its lock, its ``QueryResult``)."""
    result = store.query(_only(_WINDOW_SPANS, tenant), _window_parameters(service, since_seconds, max_traces, tenant))
    return [span_from_row(dict(zip(result.columns, row))) for row in result.rows]


def entry_services(store: Any, since_seconds: int, tenant: str | None = None) -> list[tuple[str, str]]:
    """(tenant, service) of the services that had a root span (a request entering the system) in
    the last ``since_seconds``: of every tenant, or of ``tenant`` only."""
    rows = store.query(_only(_ENTRY_SERVICES, tenant), {"since": since_seconds, "tenant": tenant or ""}).rows
    return [(row[0], row[1]) for row in rows]
