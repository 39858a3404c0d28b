"""The OTLP paths for one batch of Kafka records, without Faust: decode, store, score.

Records are what the OpenTelemetry Collector's Kafka exporter writes: one
``ExportTraceServiceRequest`` (topic ``otlp_spans``) or ``ExportMetricsServiceRequest``
(topic ``otlp_metrics``) per record, in ``otlp_proto`` or ``otlp_json`` (``M1_OTLP_ENCODING``).

* Spans go to ``otel_traces`` (the RED rollup ``otel_red_1m`` follows by materialized view).
  Per operation (service, span name) and minute, the p90 duration and the error rate become
  metric points ``span.duration.p90_ms`` / ``span.error_rate`` (label ``operation``) that are
  scored and stored by the metrics path (:meth:`MetricsPipeline.score_and_store`), so duration
  and error-rate anomalies reach the anomalies table and topic like any other.
* Gauge and sum points go to ``otel_metrics_gauge`` / ``otel_metrics_sum`` and, as plain
  metric points, through the same scoring into ``metric_points``.
* A record that is not a valid request (truncated protobuf, bad JSON, wrong id length) is
  dead-lettered with the decoder's reason, in the metrics path's ``DeadLetter`` format.
* With ``M1_TENANT_TOPICS`` a record belongs to its topic's tenant (:func:`claim_for_topic`): one
  whose resource attribute ``tenant`` or ``m1.tenant`` names another is dead-lettered (reason
  ``tenant mismatch: ...``), and resources naming none take the topic's tenant.
* Once its tenant is known, every row passes the personal-data policy (``compliance.redact``, the
  metrics path's redactor) before anything is stored or scored: attributes, names and messages
  hold pseudonyms or redaction marks, so do the metric points and RED series made from them.

As in the metrics path, :meth:`process_spans` / :meth:`process_metrics` return what must go
back to Kafka, and the caller acknowledges the batch only after sending it.
"""

from __future__ import annotations

import logging
import random
import threading
from array import array
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from m1.settings import Settings
from schemas.events import MetricPoint
from schemas.otlp import ENCODINGS, DecodeError, decode_metrics, decode_traces, metric_points, metric_rows, span_rows
from sinks.clickhouse import Store
from streams.metrics_pipeline import (BatchOutcome, MetricsPipeline, Record, TopicTenants, dead_letter, tenant_mismatch,
                                     too_far_ahead, topic_tenants)
from streams.tracing import stage

log = logging.getLogger(__name__)

_NS = pa.timestamp("ns", tz="UTC")
_MAP = pa.map_(pa.string(), pa.string())
_STR, _STRS = pa.string(), pa.list_(pa.string())

# Arrow types of the OTel tables' columns (schemas/ddl/020_otel.sql); rows come from schemas.otlp.
# Tenant (the first column of their keys, schemas/ddl/070_tenant_keys.sql) is not sent: the engine
# materialises it from ResourceAttributes['tenant'], which claim_for_topic sets with tenant topics.
TRACE_COLUMNS: dict[str, pa.DataType] = {
    "Timestamp": _NS, "TraceId": _STR, "SpanId": _STR, "ParentSpanId": _STR, "TraceState": _STR,
    "SpanName": _STR, "SpanKind": _STR, "ServiceName": _STR, "ResourceAttributes": _MAP,
    "ScopeName": _STR, "ScopeVersion": _STR, "SpanAttributes": _MAP, "Duration": pa.uint64(),
    "StatusCode": _STR, "StatusMessage": _STR,
    "Events.Timestamp": pa.list_(_NS), "Events.Name": _STRS, "Events.Attributes": pa.list_(_MAP),
    "Links.TraceId": _STRS, "Links.SpanId": _STRS, "Links.TraceState": _STRS, "Links.Attributes": pa.list_(_MAP),
}
GAUGE_COLUMNS: dict[str, pa.DataType] = {
    "ResourceAttributes": _MAP, "ResourceSchemaUrl": _STR, "ScopeName": _STR, "ScopeVersion": _STR,
    "ScopeAttributes": _MAP, "ScopeDroppedAttrCount": pa.uint32(), "ScopeSchemaUrl": _STR,
    "ServiceName": _STR, "MetricName": _STR, "MetricDescription": _STR, "MetricUnit": _STR,
    "Attributes": _MAP, "StartTimeUnix": _NS, "TimeUnix": _NS, "Value": pa.float64(), "Flags": pa.uint32(),
    "Exemplars.FilteredAttributes": pa.list_(_MAP), "Exemplars.TimeUnix": pa.list_(_NS),
    "Exemplars.Value": pa.list_(pa.float64()), "Exemplars.SpanId": _STRS, "Exemplars.TraceId": _STRS,
}
SUM_COLUMNS: dict[str, pa.DataType] = {**GAUGE_COLUMNS, "AggregationTemporality": pa.int32(), "IsMonotonic": pa.bool_()}

#: RED minutes close once spans this much later have been seen (or the topic is this long idle).
RED_GRACE_SECONDS = 60.0
#: Bounds of the RED state of one tenant: open (operation, minute) buckets, and durations kept
#: per bucket (a uniform sample beyond it, so its p90 is an estimate; counts stay exact).
RED_MAX_OPEN_PER_TENANT = 2_000
RED_MAX_SAMPLES = 2_048
RED_DURATION_METRIC = "span.duration.p90_ms"
RED_ERROR_METRIC = "span.error_rate"


def arrow_columns(rows: list[dict[str, Any]], types: Mapping[str, pa.DataType]) -> dict[str, pa.Array]:
    """Rows of ``schemas.otlp`` as typed Arrow columns (maps from dicts, ns timestamps from ints)."""
    return {name: _array([row[name] for row in rows], type_) for name, type_ in types.items()}


def _array(values: list, type_: pa.DataType) -> pa.Array:
    if pa.types.is_map(type_):
        return pa.array([list(v.items()) for v in values], type=type_)
    if pa.types.is_timestamp(type_):
        return pa.array(values, type=pa.int64()).cast(type_)
    if pa.types.is_list(type_):
        inner = type_.value_type
        if pa.types.is_map(inner):
            return pa.array([[list(d.items()) for d in v] for v in values], type=type_)
        if pa.types.is_timestamp(inner):
            return pa.array(values, type=pa.list_(pa.int64())).cast(type_)
    return pa.array(values, type=type_)


@dataclass
class OtlpOutcome(BatchOutcome):
    """A batch's outcome, plus what the OTLP paths wrote."""

    spans: int = 0
    gauge: int = 0
    sum: int = 0
    unscored: list[str] = field(default_factory=list)  # why points could not be scored


@dataclass
class _Minute:
    durations_ms: array = field(default_factory=lambda: array("d"))  # all, or a uniform sample of ``spans``
    spans: int = 0
    errors: int = 0


class RedMinutes:
    """Per operation and minute: span durations and errors, until the minute is complete.

    Event time drives it, per tenant: a tenant's minute closes when a span of that tenant
    ending ``grace`` seconds after the minute has been seen, or when no span arrived for
    ``grace`` seconds (``close_idle``). Spans of a minute that already closed (late or
    replayed) are dropped here: the exact RED numbers are in ``otel_red_1m``; these feed the
    detectors. One tenant's clock (or a span stamped years ahead) closes only its own minutes.

    A tenant's state is bounded: at most ``max_open`` open buckets (a new bucket beyond it first
    closes the tenant's oldest minute early) of at most ``max_samples`` durations each (reservoir
    sampling beyond it, seeded, so a replay gives the same numbers).
    """

    def __init__(self, grace_seconds: float = RED_GRACE_SECONDS, max_open: int = RED_MAX_OPEN_PER_TENANT,
                 max_samples: int = RED_MAX_SAMPLES) -> None:
        self.grace_ns = int(grace_seconds * 1e9)
        self.max_open, self.max_samples = max_open, max_samples
        self.open: dict[tuple[str, str, str, str, int], _Minute] = {}
        self.open_per_tenant: dict[str, int] = defaultdict(int)
        self._sample = random.Random(0)
        self.watermark_ns: dict[str, int] = defaultdict(int)  # per tenant: latest span end seen
        self.closed_ns: dict[str, int] = defaultdict(int)  # per tenant: minutes starting before are closed
        self._last_add = time.monotonic()
        self._lock = threading.Lock()

    def add(self, rows: Iterable[dict[str, Any]]) -> list[MetricPoint]:
        """Account spans (``otel_traces`` rows); returns the points of minutes that closed."""
        with self._lock:
            self._last_add = time.monotonic()
            tenants = set()
            early: list[MetricPoint] = []  # minutes closed early to keep a tenant within max_open
            for row in rows:
                start, resource = row["Timestamp"], row["ResourceAttributes"]
                tenant = _tenant(resource)
                tenants.add(tenant)
                minute = start // 60_000_000_000 * 60_000_000_000
                self.watermark_ns[tenant] = max(self.watermark_ns[tenant], start + row["Duration"])
                if minute < self.closed_ns[tenant]:
                    continue
                key = (tenant, _region(resource), row["ServiceName"], row["SpanName"][:256], minute)
                if key not in self.open:
                    while self.open_per_tenant[tenant] >= self.max_open and minute >= self.closed_ns[tenant]:
                        oldest = min(k[4] for k in self.open if k[0] == tenant)
                        early += self._close(tenant, oldest + 60_000_000_000)
                    if minute < self.closed_ns[tenant]:
                        continue
                    self.open[key] = _Minute()
                    self.open_per_tenant[tenant] += 1
                self._account(self.open[key], row["Duration"] / 1e6, row["StatusCode"] == "Error")
            return early + [p for tenant in sorted(tenants)
                            for p in self._close(tenant, self.watermark_ns[tenant] - self.grace_ns)]

    def _account(self, bucket: _Minute, duration_ms: float, error: bool) -> None:
        bucket.spans += 1
        bucket.errors += error
        if len(bucket.durations_ms) < self.max_samples:
            bucket.durations_ms.append(duration_ms)
        elif (slot := self._sample.randrange(bucket.spans)) < self.max_samples:
            bucket.durations_ms[slot] = duration_ms

    def close_idle(self) -> list[MetricPoint]:
        """Close every open minute if no span arrived for the grace period."""
        with self._lock:
            if time.monotonic() - self._last_add < self.grace_ns / 1e9 or not self.open:
                return []
            tenants = sorted({key[0] for key in self.open})
            return [p for t in tenants for p in self._close(t, max(self.watermark_ns[t], time.time_ns()))]

    def _close(self, tenant: str, upto_ns: int) -> list[MetricPoint]:
        limit = upto_ns // 60_000_000_000 * 60_000_000_000 - 60_000_000_000  # last minute wholly before upto_ns
        closed = self.closed_ns[tenant] = max(self.closed_ns[tenant], limit + 60_000_000_000)
        points = []
        for key in [k for k in self.open if k[0] == tenant and k[4] < closed]:
            _, region, service, operation, minute = key
            bucket = self.open.pop(key)
            self.open_per_tenant[tenant] -= 1
            ts, labels = minute / 1e9, {"operation": operation}
            p90 = float(np.percentile(bucket.durations_ms, 90))
            rate = bucket.errors / bucket.spans
            points.append(MetricPoint(ts, tenant, region, service, RED_DURATION_METRIC, p90, labels))
            points.append(MetricPoint(ts, tenant, region, service, RED_ERROR_METRIC, rate, labels))
        return points


def _tenant(resource: Mapping[str, str]) -> str:
    return resource.get("tenant") or resource.get("m1.tenant") or "default"


def _region(resource: Mapping[str, str]) -> str:
    return resource.get("cloud.region") or "unknown"


def claim_for_topic(rows: list[dict[str, Any]], topic: str, tenant_of: TopicTenants) -> str | None:
    """Why the rows of one record of ``topic`` are refused (a resource naming another tenant than
    the topic's, or a topic of no tenant), or None after giving every resource the topic's tenant."""
    owner = tenant_of(topic)
    for row in rows:
        resource = row["ResourceAttributes"]
        for named in (resource.get("tenant"), resource.get("m1.tenant")):
            if reason := tenant_mismatch(named or None, topic, owner):
                return reason
    if reason := tenant_mismatch(None, topic, owner):
        return reason
    for row in rows:
        row["ResourceAttributes"]["tenant"] = owner
    return None


def by_series(points: Iterable[MetricPoint]) -> dict[str, list[MetricPoint]]:
    """Points grouped by series, each series in time order (what the detectors expect)."""
    grouped: dict[str, list[MetricPoint]] = defaultdict(list)
    for point in points:
        grouped[point.series_key].append(point)
    for series_points in grouped.values():
        series_points.sort(key=lambda p: p.ts)
    return grouped


class OtlpPipeline:
    """Decode, store and score batches of OTLP records from Kafka."""

    def __init__(self, settings: Settings, store: Store, metrics: MetricsPipeline,
                 red_grace_seconds: float = RED_GRACE_SECONDS) -> None:
        if settings.otlp_encoding not in ENCODINGS:
            raise ValueError(f"M1_OTLP_ENCODING={settings.otlp_encoding!r}: expected one of {', '.join(ENCODINGS)}")
        self.encoding = settings.otlp_encoding
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.red = RedMinutes(red_grace_seconds)
        self.tenant_of = topic_tenants(settings)

    def process_spans(self, records: list[Record]) -> OtlpOutcome:
        """One batch of ``ExportTraceServiceRequest`` records; raises only if the store fails."""
        now = time.time()
        outcome = OtlpOutcome()
        with stage("decode"):
            requests = self._decode(records, decode_traces, outcome, now)
        with stage("validate"):  # ids of the right length; service, tenant from the resource
            rows: list[dict[str, Any]] = []
            for record, request in requests:
                try:
                    record_rows = span_rows(request)
                    self._claim(record_rows, record, self.metrics.redactor.spans)
                except DecodeError as exc:
                    outcome.dead_letters.append(dead_letter(record, exc.reason, now, self.settings.max_payload_bytes))
                    continue
                rows += record_rows
        with stage("sink", **{"db.collection.name": "otel_traces"}):
            outcome.spans = self.store.insert("otel_traces", arrow_columns(rows, TRACE_COLUMNS)) if rows else 0
        red_points = self.red.add(self._scorable_spans(rows, now, outcome))
        outcome.stored, outcome.anomalies = self.metrics.score_and_store(by_series(red_points), now, outcome.dead_letters)
        return outcome

    def process_metrics(self, records: list[Record]) -> OtlpOutcome:
        """One batch of ``ExportMetricsServiceRequest`` records; raises only if the store fails."""
        now = time.time()
        outcome = OtlpOutcome()
        with stage("decode"):
            requests = self._decode(records, decode_metrics, outcome, now)
        with stage("validate"):  # points must be valid metric points to be scored
            gauge: list[dict[str, Any]] = []
            sums: list[dict[str, Any]] = []
            points: list[MetricPoint] = []
            for record, request in requests:
                try:
                    rows = metric_rows(request)
                    self._claim([*rows.gauge, *rows.sum], record, self.metrics.redactor.metric_rows)
                except DecodeError as exc:
                    outcome.dead_letters.append(dead_letter(record, exc.reason, now, self.settings.max_payload_bytes))
                    continue
                gauge += rows.gauge
                sums += rows.sum
                for i, point in enumerate(metric_points(rows)):
                    try:
                        if reason := too_far_ahead(point["ts"], now, self.settings.max_future_seconds):
                            raise ValueError(reason)
                        points.append(msgspec.convert({"schema": "metric/1", **point}, MetricPoint))
                    except (msgspec.ValidationError, ValueError) as exc:
                        outcome.unscored.append(f"{point['service']} {point['metric']} point {i}: {exc}")
        if outcome.unscored:
            log.warning("%d OTLP metric points not scored, e.g. %s", len(outcome.unscored), outcome.unscored[0])
        with stage("sink", **{"db.collection.name": "otel_metrics_gauge,otel_metrics_sum"}):
            outcome.gauge = self.store.insert("otel_metrics_gauge", arrow_columns(gauge, GAUGE_COLUMNS)) if gauge else 0
            outcome.sum = self.store.insert("otel_metrics_sum", arrow_columns(sums, SUM_COLUMNS)) if sums else 0
        outcome.stored, outcome.anomalies = self.metrics.score_and_store(by_series(points), now, outcome.dead_letters)
        return outcome

    def close_idle_minutes(self) -> OtlpOutcome:
        """Score the RED minutes left open when spans stopped coming (called by a timer)."""
        outcome = OtlpOutcome()
        points = self.red.close_idle()
        if points:
            outcome.stored, outcome.anomalies = self.metrics.score_and_store(by_series(points), time.time(), outcome.dead_letters)
        return outcome

    def _scorable_spans(self, rows: list[dict[str, Any]], now: float, outcome: OtlpOutcome) -> list[dict[str, Any]]:
        """The spans that may feed the RED detectors: not those ending more than
        ``M1_MAX_FUTURE_SECONDS`` after ``now`` (stored, not scored, like such OTLP points: one
        would close its tenant's minutes up to its end, and later spans would be dropped)."""
        scorable = []
        for row in rows:
            if reason := too_far_ahead((row["Timestamp"] + row["Duration"]) / 1e9, now, self.settings.max_future_seconds):
                outcome.unscored.append(f"span {row['ServiceName']} {row['SpanName'][:64]}: {reason}")
            else:
                scorable.append(row)
        if len(scorable) < len(rows):
            log.warning("%d spans stored but not scored, e.g. %s", len(rows) - len(scorable), outcome.unscored[-1])
        return scorable

    def _claim(self, rows: list[dict[str, Any]], record: Record, redact: Callable[[list[dict[str, Any]]], None]) -> None:
        """Give every resource of ``record``'s rows the tenant the pipeline files it under, in its
        attribute ``tenant`` (what the tables' ``Tenant`` column is made from, so stored rows and
        scored series agree): with tenant topics the topic's (``DecodeError`` if a resource names
        another), else its own ``tenant`` or ``m1.tenant`` attribute, ``default`` without one.
        Then ``redact`` the rows (in place) as that tenant's."""
        if self.tenant_of is None:
            for row in rows:
                row["ResourceAttributes"]["tenant"] = _tenant(row["ResourceAttributes"])
        elif reason := claim_for_topic(rows, record.topic, self.tenant_of):
            raise DecodeError(reason)
        redact(rows)

    def _decode(self, records: list[Record], decode: Any, outcome: OtlpOutcome, now: float) -> list[tuple[Record, Any]]:
        decoded = []
        for record in records:
            if not record.value:
                outcome.dead_letters.append(dead_letter(record, "empty record (no value)", now, self.settings.max_payload_bytes))
                continue
            try:
                decoded.append((record, decode(record.value, self.encoding)))
            except DecodeError as exc:
                outcome.dead_letters.append(dead_letter(record, exc.reason, now, self.settings.max_payload_bytes))
        return decoded
