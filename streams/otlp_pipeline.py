"""The OTLP paths for one batch of Kafka records, without Faust: decode, store, forward to scoring.

Records are what the OpenTelemetry Collector's Kafka exporter writes: one
``ExportTraceServiceRequest`` (topic ``otlp_spans``) or ``ExportMetricsServiceRequest``
(topic ``otlp_metrics``) per record, in ``otlp_proto`` or ``otlp_json`` (``M1_OTLP_ENCODING``).

* Spans go to ``otel_traces`` (the RED rollup ``otel_red_1m`` follows by materialized view).
  Per operation (service, span name) and minute, the p90 duration and the error rate become
  metric points ``span.duration.p90_ms`` / ``span.error_rate`` (label ``operation``): the spans
  go through the RED topic keyed by tenant and service (``streams.red``), and the minutes' points
  to the metrics topic keyed by series, where the metrics path scores and stores them, so duration
  and error-rate anomalies reach the anomalies table and topic like any other.
* Gauge and sum points go to ``otel_metrics_gauge`` / ``otel_metrics_sum`` and, as plain
  metric points keyed by series, to the metrics topic, hence into ``metric_points``.
* A record that is not a valid request (truncated protobuf, bad JSON, wrong id length) is
  dead-lettered with the decoder's reason, in the metrics path's ``DeadLetter`` format.
* With ``M1_TENANT_TOPICS`` a record belongs to its topic's tenant (:func:`claim_for_topic`): one
  whose resource attribute ``tenant`` or ``m1.tenant`` names another is dead-lettered (reason
  ``tenant mismatch: ...``), and resources naming none take the topic's tenant.
* Once its tenant is known, every row passes the personal-data policy (``compliance.redact``, the
  metrics path's redactor) before anything is stored or scored: attributes, names and messages
  hold pseudonyms or redaction marks, so do the metric points and RED series made from them.

As in the metrics path, :meth:`process_spans` / :meth:`process_metrics` / :meth:`aggregate_red`
return what must go to Kafka, and the caller acknowledges the batch only after sending it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa
from aiokafka import TopicPartition

from core.settings import Settings
from core.kafka.topics import tenant_topic
from schemas.events import MetricPoint, encode
from schemas.otlp import ENCODINGS, DecodeError, decode_metrics, decode_traces, metric_points, metric_rows, span_rows
from sinks.clickhouse import STRING_MAP_TYPE, Store, string_maps
from sinks.model_state import load_state_key
from streams.metrics_pipeline import (BatchOutcome, MetricsPipeline, Record, TopicTenants, dead_letter, tenant_mismatch,
                                     too_far_ahead, topic_tenants)
from streams.red import RedBank, RedSpans, decode_red, red_records, red_topic, resource_tenant
from streams.red_changelog import RedChangelog
from streams.tracing import stage

log = logging.getLogger(__name__)

_NS = pa.timestamp("ns", tz="UTC")
_MAP = STRING_MAP_TYPE
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

def arrow_columns(rows: list[dict[str, Any]], types: Mapping[str, pa.DataType]) -> dict[str, pa.Array]:
    """Rows of ``schemas.otlp`` as typed Arrow columns (maps from dicts, ns timestamps from ints)."""
    return {name: _array([row[name] for row in rows], type_) for name, type_ in types.items()}


def _array(values: list, type_: pa.DataType) -> pa.Array:
    if type_ == STRING_MAP_TYPE:
        return string_maps(values)
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



class OtlpPipeline:
    """Decode and store batches of OTLP records from Kafka; forward what is scored to where it is
    partitioned by what it aggregates (#14):

    * OTLP metric points go to the metrics topic keyed by series (``outcome.rekeyed``): the worker
      owning the series' partition scores them, as any metric point;
    * the spans that feed the RED detectors go to the RED topic (:func:`streams.red.red_topic`)
      keyed by tenant and service; :meth:`aggregate_red` (the worker owning that partition) accounts
      them in :attr:`red` and forwards each closed minute's points to the metrics topic the same way,
      and the changed keys' RED state to :attr:`red_changelog`'s topic.

    The caller sends ``outcome.rekeyed`` (with dead letters) before acknowledging the batch, in the
    transaction that commits the batch's offsets."""

    def __init__(self, settings: Settings, store: Store, metrics: MetricsPipeline,
                 red_grace_seconds: float | None = None, red_changelog: RedChangelog | None = None) -> None:
        if settings.otlp_encoding not in ENCODINGS:
            raise ValueError(f"M1_OTLP_ENCODING={settings.otlp_encoding!r}: expected one of {', '.join(ENCODINGS)}")
        self.encoding = settings.otlp_encoding
        self.settings = settings
        self.store = store
        self.metrics = metrics
        grace = settings.red_grace_seconds if red_grace_seconds is None else red_grace_seconds
        self.red = RedBank(load_state_key(settings.state_key_file), grace)
        self.red_topic = red_topic(settings)
        self.red_changelog = red_changelog or RedChangelog(settings)
        self._restoring = threading.Lock()
        self.tenant_of = topic_tenants(settings)

    def process_spans(self, records: list[Record]) -> OtlpOutcome:
        """One batch of ``ExportTraceServiceRequest`` records; raises only if the store fails."""
        now = time.time()
        outcome = OtlpOutcome()
        with stage("decode"):
            requests = self._decode(records, decode_traces, outcome, now)
        with stage("validate"):  # ids of the right length; service, tenant from the resource
            claimed: list[tuple[Record, list[dict[str, Any]]]] = []
            for record, request in requests:
                try:
                    record_rows = span_rows(request)
                    self._claim(record_rows, record, self.metrics.redactor.spans)
                except DecodeError as exc:
                    outcome.dead_letters.append(dead_letter(record, exc.reason, now, self.settings.max_payload_bytes))
                    continue
                claimed.append((record, record_rows))
        rows = [row for _, record_rows in claimed for row in record_rows]
        with stage("sink", **{"db.collection.name": "otel_traces"}):
            outcome.spans = self.store.insert("otel_traces", arrow_columns(rows, TRACE_COLUMNS)) if rows else 0
        for record, record_rows in claimed:
            outcome.rekeyed += red_records(self._scorable_spans(record_rows, now, outcome), self.red_topic,
                                           f"{record.topic}:{record.partition}", record.offset)
        self._store_dead_letters(outcome, now)
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
        outcome.rekeyed = self._to_metrics_topic(points)
        self._store_dead_letters(outcome, now)
        return outcome

    def aggregate_red(self, records: list[Record]) -> OtlpOutcome:
        """One batch of the RED topic: account each key's spans (the state of its partition restored
        first, if not yet) and forward the points of the minutes that closed and the changed keys'
        state."""
        now = time.time()
        outcome = OtlpOutcome()
        batches: dict[str, list[tuple[str, RedSpans]]] = defaultdict(list)  # by partition, in order
        with stage("decode"):
            for record in records:
                try:
                    batches[f"{record.topic}:{record.partition}"].append(
                        (record.key.decode() if record.key else "", decode_red(record.value or b"")))
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    outcome.dead_letters.append(dead_letter(record, f"not a RED record: {exc}", now,
                                                            self.settings.max_payload_bytes))
        with stage("score"):
            self._restore_red(batches)
            outcome.rekeyed = self._to_metrics_topic([p for partition, part in batches.items()
                                                      for p in self.red.add(part, partition)])
            outcome.rekeyed += self.red_changelog.records(self.red.checkpoint())
        self._store_dead_letters(outcome, now)
        return outcome

    def close_idle_minutes(self) -> OtlpOutcome:
        """Forward the RED minutes left open when a key's spans stopped coming (called by a timer),
        and the changed keys' state."""
        outcome = OtlpOutcome()
        outcome.rekeyed = self._to_metrics_topic(self.red.close_idle())
        outcome.rekeyed += self.red_changelog.records(self.red.checkpoint())
        return outcome

    def forget_red(self, keys: Iterable[str]) -> None:
        """Drop the RED state of ``keys`` (their partitions went to another worker)."""
        for key in keys:
            self.red.discard(key)

    def reset_red(self) -> None:
        """Drop all RED state: what it changed since the last commit is rolled back (the partitions
        held are restored again, :meth:`moved_red`)."""
        self.red.clear()

    def moved_red(self, assigned: Iterable[TopicPartition], lost: Iterable[TopicPartition]) -> None:
        """After a rebalance: drop the keys of the partitions lost (their new owner closes their
        minutes), restore every key of those assigned from the changelog (their open minutes close
        here, by the idle timer if no span comes again)."""
        self.red.release(f"{tp.topic}:{tp.partition}" for tp in lost)
        self._restore_red([f"{tp.topic}:{tp.partition}" for tp in assigned])

    def _restore_red(self, partitions: Iterable[str]) -> None:
        """Restore, from the changelog, the keys of those RED ``partitions`` (``topic:partition``)
        not restored since they were assigned (a batch may come before the rebalance's restore)."""
        with self._restoring:
            if todo := self.red.unrestored(partitions):
                numbers = {int(p.rpartition(":")[2]): p for p in todo}
                for number, rows in self.red_changelog.read(sorted(numbers)).items():
                    self.red.restore(rows, partition=numbers[number])

    def _store_dead_letters(self, outcome: OtlpOutcome, now: float) -> None:
        if outcome.dead_letters:  # the metrics path's way in for dead letters (nothing to score here)
            self.metrics.score_and_store({}, now, outcome.dead_letters)

    def _to_metrics_topic(self, points: list[MetricPoint]) -> list[tuple[str, bytes, bytes]]:
        """``points`` as metric/1 records keyed by series, each series in time order, to the metrics
        topic (with tenant topics, their tenant's)."""
        base = self.settings.topic_metrics
        return [(tenant_topic(p.tenant, base) if self.tenant_of else base, p.series_key.encode(), encode(p))
                for p in sorted(points, key=lambda p: p.ts)]

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
                row["ResourceAttributes"]["tenant"] = resource_tenant(row["ResourceAttributes"])
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
