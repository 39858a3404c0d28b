"""The metrics path for one batch of Kafka records, without Faust: decode, score, store.

The metrics batch handler (``streams.metrics_handler``) and the benchmarks call
:meth:`MetricsPipeline.process`; it returns what must go back to Kafka (dead letters,
anomalies, records to re-key) so that the caller acknowledges the batch only after
both the store and Kafka have taken it. That order is what makes delivery
at-least-once; the store's ReplacingMergeTree tables make the replays invisible.
The outcome also carries the batch's decoded points, by series: the forecasting path
(``streams.forecast_pipeline``) learns those, so each record is decoded once
(:func:`decode_batch`). Each point passes the personal-data policy right after decoding
(``compliance.redact``), before its series key is made: series keys, model-state keys, stored
rows and every record derived from them hold pseudonyms, never the clear value; every dead
letter's bytes and reason are scrubbed where it is made (:func:`dead_letter`).
"""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, compress, repeat
from operator import and_, attrgetter, eq, is_, itemgetter, le, not_
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from compliance.redact import Redactor, scrub_dead_letter
from core.settings import Settings
from core.kafka.topics import tenant_of_topic
from models.bank import ModelBank
from models.detectors.fast_ensemble import EnsemblePool, export, freeze
from models.ordered import InOrder
from models.registry import make_detector
from models.detectors.threshold import Thresholds
from schemas.events import EventDecoder, InvalidEvent, MetricPoint, encode
from sinks.clickhouse import TS_TYPE, Store, string_maps
from sinks.checkpoints import Positions
from sinks.model_state import StateLocation, load_state_key, state_location
from streams.tracing import stage
from tenancy.quotas import IngestQuotas


class Record(msgspec.Struct, frozen=True, gc=False):
    """A Kafka record as the pipeline needs it (untracked by the garbage collector: it holds no
    references back, and a batch holds thousands, which would make full collections frequent).
    The batch consumer hands aiokafka's records instead, which have these fields."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class DeadLetter(msgspec.Struct, frozen=True):
    """Why a record was rejected, where it came from, and its bytes (base64): all of them, or
    the first ``max_payload_bytes`` of a larger record (``payload_bytes`` is its full size), so
    a dead letter always fits where its record came from."""

    reason: str
    topic: str
    partition: int
    offset: int
    payload_b64: str
    received_at: float
    payload_bytes: int


class Anomaly(msgspec.Struct, frozen=True):
    """A scored point over the threshold, as published on the anomalies topic."""

    ts: float
    tenant: str
    region: str
    service: str
    metric: str
    series: str
    value: float
    score: float
    severity: str
    detector: str


@dataclass
class BatchOutcome:
    """What a batch produced; the caller sends the Kafka parts before acknowledging."""

    stored: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    rekeyed: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (topic, key, value), back where it came from
    # the valid points keyed by their series, per series in record order (metrics topic only)
    points: dict[str, list[MetricPoint]] = field(default_factory=dict)
    # the record and series of each of ``points``, in batch order: a point over quota is dead-lettered with its record
    records: list[Record] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def sources(self, series: str) -> list[Record]:
        """The records of the points of ``series``, in order (looked for only for a series over quota)."""
        return [record for record, key in zip(self.records, self.keys) if key == series]


class SavedModels:
    """A pipeline's model bank as checkpoints see it: its ``bank``, where its state goes (``state``)
    and the lock that guards both (``_lock``). Shared by the metrics and forecasting pipelines.

    ``positions`` are those of the consumer that feeds the bank (``streams.app`` wires them): with
    them, a checkpoint written and never committed is not restored (``sinks.checkpoints``, "Versions")."""

    bank: ModelBank
    state: StateLocation
    _lock: threading.RLock
    positions: Positions | None = None

    def checkpoint(self) -> int:
        """Write changed model state to :attr:`state`; returns how many series were saved."""
        with self._lock, stage("checkpoint"):
            return self.state.save(self.bank, self.positions)

    def cut(self) -> Callable[[], int]:
        """Cut the changed model state now (cheap: call it between batches); the writer returned
        stores it in :attr:`state` without the lock, while batches go on, and returns how many
        series it saved (``streams.batch_consumer`` runs it, then commits)."""
        with self._lock, stage("checkpoint"):
            return self.state.snapshot(self.bank, self.positions)

    def forget(self, series: Iterable[str]) -> None:
        """Drop the models of ``series``: their partitions went to another worker, which saves their
        state from now on; a later use restores it from :attr:`state` (``streams.batch_consumer``)."""
        series = list(series)
        with self._lock:
            for key in series:
                self.bank.discard(key)
            self.state.forget(self.bank, series)

    def _restore(self, series: list[str]) -> None:
        self.state.restore_missing(self.bank, series, self.positions)


class MetricsPipeline(SavedModels):
    """Decode, validate, score per series and store batches of metric records."""

    def __init__(self, settings: Settings, store: Store, redactor: Redactor | None = None):
        self.settings = settings
        self.store = store
        self.redactor = redactor or Redactor.from_settings(settings, store)  # shared with the OTLP and audit paths
        self.decoder = EventDecoder(MetricPoint, max_bytes=settings.max_payload_bytes)
        options = settings.detector_options()
        make_detector(settings.detector, **options)  # a bad configuration fails here, at start
        # InOrder: a replayed or twice-forwarded point is scored and stored again, never learned again.
        # Checkpoints of models built with other (non-default) options are not restored.
        factory = lambda: InOrder(make_detector(settings.detector, **options))  # noqa: E731
        # the default ensemble runs compiled, all series of a batch in one call (models.detectors.fast_ensemble)
        self.pool = EnsemblePool.serving(factory, capacity=settings.max_series + 1)
        self.bank = ModelBank(settings.detector, max_series=settings.max_series,
                              factory=factory if self.pool is None else self.pool.new,
                              adopt=None if self.pool is None else self.pool.adopt, export=export, freeze=freeze,
                              config=settings.changed_detector_options(), key=load_state_key(settings.state_key_file))
        self.quotas = IngestQuotas(settings)
        self.thresholds = Thresholds(settings.anomaly_threshold, settings.critical_threshold)
        self.state = state_location(settings.state_dir, store)  # where checkpoints go (M1_STATE_DIR)
        self._lock = threading.RLock()  # the bank is shared with the OTLP agents' threads
        self.tenant_of = topic_tenants(settings)
        self.series_of = SeriesOf(self.redactor.event)  # redaction and series keys, once per series

    def process(self, records: list[Record], decoded: BatchOutcome | None = None) -> BatchOutcome:
        """Handle one batch, given its :meth:`decode` if that was done already (then used up); raises
        only if the store fails (then nothing may be acked)."""
        return self.score_admitted(self.admit(self.decode(records) if decoded is None else decoded))

    def decode(self, records: list[Record]) -> BatchOutcome:
        """The batch's outcome before scoring (:func:`decode_batch`, now). Thread-safe, and free of
        the models: the next batch may be decoded while this one is scored and stored."""
        return decode_batch(self.decoder, records, time.time(), self.settings.max_future_seconds, self.tenant_of,
                            redact=self.series_of)

    def admit(self, decoded: BatchOutcome) -> BatchOutcome:
        """``decoded`` with the points over their tenant's ingest quota taken out and dead-lettered
        (see :meth:`score_and_store`): the points the batch scores, stores and forecasts."""
        with self._lock:
            self._enforce_quotas(decoded.points, time.time(), decoded.dead_letters, decoded.sources)
        return decoded

    def score_admitted(self, outcome: BatchOutcome) -> BatchOutcome:
        """Score and store an :meth:`admit`-ted batch; raises only if the store fails."""
        outcome.stored, outcome.anomalies = self._score_and_store(outcome.points, time.time(), outcome.dead_letters)
        return outcome

    def score_and_store(self, by_series: dict[str, list[MetricPoint]], now: float,
                        dead_letters: list[DeadLetter] | None = None,
                        sources: Callable[[str], list[Record]] | None = None) -> tuple[int, list[Anomaly]]:
        """Score decoded points (each series' in time order), store them, their anomalies and the
        dead letters; returns (points stored, anomalies). Also the OTLP paths' way in.

        Points over their tenant's ingest quota (:class:`tenancy.quotas.IngestQuotas`) are taken
        out of ``by_series`` and added to ``dead_letters`` (reason ``quota: ...``), each with its
        record from ``sources(series)`` (in the order of ``by_series[series]``; needed when there are points)."""
        dead_letters = [] if dead_letters is None else dead_letters
        with self._lock:
            self._enforce_quotas(by_series, now, dead_letters, sources)
        return self._score_and_store(by_series, now, dead_letters)

    def _score_and_store(self, by_series: dict[str, list[MetricPoint]], now: float,
                         dead_letters: list[DeadLetter]) -> tuple[int, list[Anomaly]]:
        with self._lock, stage("score"):
            self._restore(list(by_series))
            columns, anomalies = self._score(by_series, now)
        with stage("sink"):
            stored = self.store.insert("metric_points", columns)
            self._store_anomalies(anomalies, now)
            self._store_dead_letters(dead_letters)
        return stored, anomalies

    def _enforce_quotas(self, by_series: dict[str, list[MetricPoint]], now: float, dead_letters: list[DeadLetter],
                        sources: Callable[[str], list[Record]] | None) -> None:
        refused = self.quotas.admit({s: len(batch) for s, batch in by_series.items()}, self.bank.__contains__, self.bank.held)
        for series, (admitted, reason) in refused.items():
            batch = by_series[series]
            if admitted:
                by_series[series] = batch[:admitted]
            else:
                del by_series[series]
            over = (sources(series) if sources else [])[admitted:]
            dead_letters.extend(dead_letter(record, reason, now, self.settings.max_payload_bytes) for record in over)

    def _score(self, by_series: dict[str, list[MetricPoint]], now: float) -> tuple[dict, list[Anomaly]]:
        threshold = self.thresholds.warning
        counts = [len(batch) for batch in by_series.values()]
        points = list(chain.from_iterable(by_series.values()))
        values = np.fromiter(map(_VALUE, points), dtype=np.float64, count=len(points))
        ts = np.fromiter(map(_TS, points), dtype=np.float64, count=len(points))
        scores = self._score_series(by_series, counts, values, ts)
        flagged = scores >= threshold
        anomalies = []
        if flagged.any():
            series_col = list(chain.from_iterable(repeat(series, n) for series, n in zip(by_series, counts)))
            for i in np.flatnonzero(flagged).tolist():
                p, score = points[i], float(scores[i])
                anomalies.append(Anomaly(p.ts, p.tenant, p.region, p.service, p.metric, series_col[i], p.value, score,
                                         self.thresholds.severity(score), self.bank.detector))
        # a series' points share its tenant, region, service and metric (its key is made of them): one value a series
        firsts = [batch[0] for batch in by_series.values()]
        rows = pa.array(np.repeat(np.arange(len(counts), dtype=np.int32), counts))
        columns = {
            "ts": pa.array((ts * 1000).astype(np.int64), type=TS_TYPE),  # int(p.ts * 1000), as numpy truncates too
            **{name: pa.array(list(map(attrgetter(name), firsts)), type=pa.string()).take(rows)
               for name in ("tenant", "region", "service", "metric")},
            "labels": labels_column(list(map(_LABELS, points)), [p.labels for p in firsts], counts, rows),
            "series": pa.array(list(by_series), type=pa.string()).take(rows),
            "value": pa.array(values),
            "score": pa.array(scores.astype(np.float32)),
            "is_anomaly": pa.array(flagged.astype(np.uint8)),
            "ingested_at": pa.array(np.full(len(points), int(now * 1000), dtype=np.int64), type=TS_TYPE),
        }
        return columns, anomalies

    def _score_series(self, by_series: dict[str, list[MetricPoint]], counts: list[int], xs: np.ndarray,
                      ts: np.ndarray) -> np.ndarray:
        """Scores of ``xs``/``ts``, the points of ``by_series`` in its order (``counts`` a series;
        score then learn, each series in record order)."""
        starts = np.zeros(len(by_series) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        if self.pool is None:
            return np.concatenate([self.bank.score_learn(series, xs[a:b], ts[a:b])
                                   for series, a, b in zip(by_series, starts.tolist(), starts[1:].tolist())] or [xs[:0]])
        # the bank hands out each series' slot (creating, restoring, evicting); one compiled call scores them all
        return self.pool.score_flat(self.bank.models(zip(by_series, counts)), starts, xs, ts)

    def _store_anomalies(self, anomalies: list[Anomaly], now: float) -> None:
        if not anomalies:
            return
        names = ["tenant", "region", "service", "metric", "series", "value", "score", "severity", "detector"]
        columns: dict = {n: [getattr(a, n) for a in anomalies] for n in names}
        columns["ts"] = pa.array([int(a.ts * 1000) for a in anomalies], type=TS_TYPE)
        columns["detected_at"] = pa.array([int(now * 1000)] * len(anomalies), type=TS_TYPE)
        self.store.insert("anomalies", columns)

    def _store_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        self.store.insert(
            "dead_letters",
            {
                "received_at": pa.array([int(d.received_at * 1000) for d in letters], type=TS_TYPE),
                "topic": [d.topic for d in letters],
                "partition": pa.array([d.partition for d in letters], type=pa.uint32()),
                "offset": pa.array([d.offset for d in letters], type=pa.uint64()),
                "reason": [d.reason for d in letters],
                "payload": pa.array([base64.b64decode(d.payload_b64) for d in letters], type=pa.binary()),
                "payload_bytes": pa.array([d.payload_bytes for d in letters], type=pa.uint64()),
            },
        )


def labels_column(maps: list[dict[str, str]], firsts: list[dict[str, str]], counts: list[int], rows: pa.Array) -> pa.MapArray:
    """The labels column of ``maps``: the points' labels, series after series (``counts`` a series,
    ``firsts`` the first map of each, ``rows`` each point's series as an index).

    A series' points carry one label set, usually in one order too: then the series' maps are
    built once and taken per row. A map that lists its pairs in another order (JSON leaves it to
    the sender) is stored as sent, so then the column is built map by map. Points made from their
    series' template (``EventDecoder.from_templates``) share its very map, which settles both
    questions without comparing a pair.

    >>> firsts = [{"host": "a", "az": "1"}, {}]
    >>> labels_column([{"host": "a", "az": "1"}, {"az": "1", "host": "a"}, {}], firsts, [2, 1],
    ...               pa.array([0, 0, 1])).to_pylist()
    [[('host', 'a'), ('az', '1')], [('az', '1'), ('host', 'a')], []]
    """
    expected = list(chain.from_iterable(map(repeat, firsts, counts)))  # each point's series' first map
    if not all(map(is_, maps, expected)) and not (maps == expected and list(map(list, maps)) == list(map(list, expected))):
        return string_maps(maps)  # a map with other pairs, or its keys in another order
    return string_maps(firsts).take(rows)


class SeriesOf:
    """What ``redact`` makes of metric points, and their series keys, remembered per series.

    The points of a series share their tenant, region, service, metric and labels, and those
    are all a metric point's redaction and series key depend on (``Redactor.event`` only
    redacts or pseudonymises a metric point's text, never encrypts it). So both are worked out
    for a series' first point; a later point keyed by that series, with those very fields,
    takes the result. ``redact`` must be such a function of those fields.

    It also remembers, by series key, a :data:`Template` of a point taken in full for a record
    keyed by its series (:meth:`remember_text`): its identity as JSON text, the number of
    ``:`` in its payload and what ``redact`` made of it. A later record keyed by that series whose
    identity has that very text, in a payload with as many ``:``, is that point with its own time and
    value (``EventDecoder.from_templates``: the colons prove that it names no field twice)."""

    #: Most series remembered; the memory starts afresh beyond it.
    LIMIT = 100_000

    def __init__(self, redact: Callable[[MetricPoint], MetricPoint]):
        self.redact = redact
        self._known: dict[bytes, Known] = {}  # by series key (bytes)
        self._templates: dict[bytes, Template] = {}  # by series key (bytes)

    def __call__(self, key: bytes | None, point: MetricPoint) -> tuple[MetricPoint, str, bool]:
        """``(redact(point), its series key, whether key is that series key)``."""
        known = self._known.get(key)  # type: ignore[arg-type]
        if known is not None and known[0] == _identity(point):
            changes = known[2]
            return (point if changes is None else _replace(point, changes)), known[1], True
        redacted = self.redact(point)
        series = redacted.series_key
        changes = None if redacted is point else {name: getattr(redacted, name) for name in _IDENTITY
                                                   if getattr(redacted, name) is not getattr(point, name)}
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        encoded = series.encode()
        self._known[encoded] = (_identity(point), series, changes)
        return redacted, series, key == encoded

    def remember_text(self, key: bytes, identity: tuple, payload: bytes, series: str, redacted: MetricPoint,
                      tenant: str) -> None:
        """Remember for records keyed ``key`` (``series`` encoded) the JSON text of a point's
        ``identity`` (``EventDecoder.identity``), the colons of its ``payload``, what ``redact`` made
        of the point and its ``tenant``."""
        if len(self._templates) >= self.LIMIT:
            self._templates.clear()
        self._templates[key] = (identity, payload.count(b":"), series, redacted, tenant)

    def templates(self, records: list[Record]) -> list[Template]:
        """The :data:`Template` remembered for each record's key, in order; for a key of no
        remembered series, one whose identity no point has."""
        return list(map(self._templates.get, map(_KEY, records), repeat(_UNREMEMBERED)))


#: What :class:`SeriesOf` remembers of a series: (identity of its points as decoded, series key, fields redaction changes).
Known = tuple[tuple, str, "dict[str, object] | None"]
#: What :class:`SeriesOf` remembers of a series' records: (identity as JSON text, ``:`` in the payload,
#: series key, a point of it redacted, its tenant as sent).
Template = tuple[tuple, int, str, "MetricPoint | None", "str | None"]
_IDENTITY = ("tenant", "region", "service", "metric", "labels")
_identity = attrgetter(*_IDENTITY)
_KEY = attrgetter("key")
_UNREMEMBERED: Template = ((), -1, "", None, None)


def _replace(point: MetricPoint, changes: dict[str, object]) -> MetricPoint:
    """``point`` with ``changes`` (a labels map copied: each point has its own)."""
    labels = changes.get("labels")
    if isinstance(labels, dict):
        changes = {**changes, "labels": dict(labels)}
    return msgspec.structs.replace(point, **changes)


def decode_batch(decoder: EventDecoder, records: list[Record], now: float, max_future_seconds: float,
                 tenant_of: TopicTenants | None = None, *,
                 redact: SeriesOf | Callable[[MetricPoint], MetricPoint]) -> BatchOutcome:
    """The outcome of a batch before scoring: its dead letters (received at ``now``; points
    stamped more than ``max_future_seconds`` after it are among them, and with ``tenant_of``,
    points whose tenant is not their topic's), the records to re-key (to the topic they came
    from; a point ``redact`` changed is re-sent redacted) and the points of the rest, each as
    ``redact`` returns it, by series. Only a record keyed by its series is scored: each series then
    lives in one partition, so one worker of the group scores its points, in order; a keyless
    record or one keyed otherwise is re-keyed (it lands in its series' partition and is scored there).
    A :class:`SeriesOf` as ``redact`` remembers its series from batch to batch.

    The usual record is a point of the series it is keyed by whose identity (names, labels) has the
    very JSON text of that series' remembered point (:meth:`SeriesOf.templates`), in a payload with as
    many ``:`` as that point's (so it names no field twice): it is read without
    its identity and becomes the remembered point, redacted, with its own time and value. Every other
    record is decoded in full."""
    outcome = BatchOutcome()
    series_of = redact if isinstance(redact, SeriesOf) else SeriesOf(redact)
    with stage("decode"):  # msgspec parses and checks each payload in one pass, all but the identity's text
        values = list(map(_VALUE, records))
        raws = decoder.read_raw_each(values)
    with stage("validate"):  # a record keyed otherwise, or not at all, belongs to its series' partition
        by_series: dict[str, list[MetricPoint]] = defaultdict(list)
        owners = {topic: tenant_of(topic) for topic in {record.topic for record in records}} if tenant_of else {}
        templates = series_of.templates(records)
        usual = _usual(decoder, records, values, raws, templates, now + max_future_seconds, owners)
        points = decoder.from_templates(list(map(_POINT, compress(templates, usual))), list(compress(raws, usual)))
        if None in points:  # a value the point's own checks refuse: that record is decoded in full
            at = list(compress(range(len(records)), usual))
            for j in [j for j, point in enumerate(points) if point is None]:
                usual[at[j]] = False
            points = [point for point in points if point is not None]
        # a series' template is replaced only if no record of this batch matched it (its sender changed its JSON)
        matched = set(compress(map(_KEY, records), usual)) if not all(usual) else set()
        start = taken = 0  # usual records go in runs, each other record on its own, in batch order
        for i in chain(compress(range(len(records)), map(not_, usual)), [len(records)]):
            _take_usual(outcome, by_series, records[start:i], points[taken : taken + i - start], templates[start:i])
            taken += i - start
            if i < len(records):
                _take_one(outcome, by_series, records[i], None if records[i].key in matched else raws[i], decoder,
                          series_of, now, max_future_seconds, owners)
            start = i + 1
    outcome.points = by_series
    return outcome


def _usual(decoder: EventDecoder, records: list[Record], values: list[bytes | None], raws: list[Any],
           templates: list[Template], limit: float, owners: dict[str, str | None]) -> list[bool]:
    """Whether each record is usual: its raw twin has the identity text of its key's template, its
    value as many ``:``, a time of at most ``limit`` and (with ``owners``) its template's tenant is
    its topic's."""
    present = raws if None not in raws else [_ABSENT if raw is None else raw for raw in raws]
    usual = list(map(eq, map(_TEMPLATE_IDENTITY, templates), map(decoder.identity, present)))
    colons = map(bytes.count, [b"" if value is None else value for value in values] if None in values else values,
                 repeat(b":"))
    usual = list(map(and_, usual, map(eq, map(_TEMPLATE_COLONS, templates), colons)))
    if max(map(_TS, present), default=limit) > limit:
        usual = list(map(and_, usual, map(le, map(_TS, present), repeat(limit))))
    if owners:
        pairs = list(zip(map(_TOPIC, records), map(_TEMPLATE_TENANT, templates)))
        refused = {pair for pair in set(pairs) if tenant_mismatch(pair[1], pair[0], owners[pair[0]]) is not None}
        if refused:
            usual = list(map(and_, usual, map(not_, map(refused.__contains__, pairs))))
    return usual


def _take_usual(outcome: BatchOutcome, by_series: dict[str, list[MetricPoint]], records: list[Record],
                points: list[MetricPoint], templates: list[Template]) -> None:
    """Add usual records (see :func:`_usual`) and their points, made from ``templates``."""
    series = list(map(_TEMPLATE_SERIES, templates))
    for key, point in zip(series, points):
        by_series[key].append(point)
    outcome.records += records
    outcome.keys += series


def _take_one(outcome: BatchOutcome, by_series: dict[str, list[MetricPoint]], record: Record, raw: Any,
              decoder: EventDecoder, series_of: SeriesOf, now: float, max_future_seconds: float,
              owners: dict[str, str | None]) -> None:
    """Add ``record``, decoded in full; with ``raw`` (its raw twin), a point of the series it is
    keyed by becomes that series' template (:meth:`SeriesOf.remember_text`)."""
    [point] = decoder.decode_each([record.value])
    if type(point) is InvalidEvent:
        outcome.dead_letters.append(dead_letter(record, point.reason, now, decoder.max_bytes))
        return
    reason = too_far_ahead(point.ts, now, max_future_seconds)
    if reason is None and owners:
        reason = tenant_mismatch(point.tenant, record.topic, owners[record.topic])
    if reason is not None:
        outcome.dead_letters.append(dead_letter(record, reason, now, decoder.max_bytes))
        return
    redacted, series, keyed = series_of(record.key, point)
    if not keyed:
        outcome.rekeyed.append((record.topic, series.encode(), record.value if redacted is point else encode(redacted)))
        return
    if raw is not None:
        series_of.remember_text(record.key, decoder.identity(raw), record.value, series, redacted,  # type: ignore[arg-type]
                                point.tenant)
    by_series[series].append(redacted)
    outcome.records.append(record)
    outcome.keys.append(series)


_VALUE, _TOPIC, _TS = attrgetter("value"), attrgetter("topic"), attrgetter("ts")
_LABELS = attrgetter("labels")
_TEMPLATE_IDENTITY, _TEMPLATE_COLONS, _TEMPLATE_SERIES, _POINT, _TEMPLATE_TENANT = map(itemgetter, range(5))
#: Stands for a payload the raw twin refused, in :func:`_usual`: an identity no series has.
_ABSENT = SimpleNamespace(ts=0.0, schema=None, tenant=None, region=None, service=None, metric=None, labels=None)


#: The tenant a topic belongs to (``core.kafka.topics.tenant_of_topic`` bound to the settings).
TopicTenants = Callable[[str], str | None]


def topic_tenants(settings: Settings) -> TopicTenants | None:
    """How records get their tenant: from their topic with tenant topics on, else ``None`` (the
    payload's tenant is trusted)."""
    return partial(tenant_of_topic, settings) if settings.tenant_topics else None


def tenant_mismatch(payload_tenant: str | None, topic: str, owner: str | None) -> str | None:
    """Why a record of ``topic`` (the tenant ``owner``'s, or no tenant's) whose payload names
    ``payload_tenant`` (or none) is refused; None if it may go on as ``owner``'s.

    >>> tenant_mismatch("beta", "acme.metrics", "acme")
    "tenant mismatch: payload says 'beta', topic belongs to 'acme'"
    >>> tenant_mismatch(None, "acme.metrics", "acme") is None
    True
    """
    if owner is None:
        return f"tenant mismatch: topic {topic!r} belongs to no tenant"
    if payload_tenant is not None and payload_tenant != owner:
        return f"tenant mismatch: payload says {payload_tenant!r}, topic belongs to {owner!r}"
    return None


def too_far_ahead(ts: float, now: float, max_future_seconds: float) -> str | None:
    """Why a point stamped ``ts`` is refused at ``now`` (more than ``max_future_seconds`` ahead:
    its series, which learns only later points, would stop learning until then), or None."""
    if ts <= now + max_future_seconds:
        return None
    return f"ts is {ts - now:,.0f} s ahead of the worker's clock (limit M1_MAX_FUTURE_SECONDS={max_future_seconds:g})"


def dead_letter(record: Record, reason: str, now: float, keep_bytes: int) -> DeadLetter:
    """The dead letter of ``record``, rejected for ``reason`` at ``now``, keeping at most
    ``keep_bytes`` of its value, scrubbed of personal data first (``compliance.redact``), as is
    the reason (it may quote the value)."""
    value = record.value or b""
    scrubbed, reason = scrub_dead_letter(value, reason)
    payload = base64.b64encode(scrubbed[:keep_bytes]).decode()
    return DeadLetter(reason, record.topic, record.partition, record.offset, payload, now, len(value))
