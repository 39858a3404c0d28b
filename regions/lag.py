"""Replication lag between regions: from heartbeats, with clock skew estimated, and MirrorMaker's offset lag.

For every ordered pair source → target, the target region's agent measures:

* **replication lag**: a heartbeat's arrival in the target (the target's clock, when its agent
  reads the mirrored ``<source>.region_heartbeats``) minus its origin time (the source's clock).
  Only beats sent after the agent started count (older ones are backlog, not lag).
* **clock skew**, estimated from the two directions as NTP does: if ``f`` is the median raw lag of
  source → target (measured by the target) and ``b`` that of target → source (measured by the
  source, read from its mirrored ``region_lag`` report), then, assuming the path takes as long
  both ways, ``skew = (f - b) / 2`` is the target's clock minus the source's and the corrected lag
  is ``f - skew = (f + b) / 2``. Until the reverse report arrives the skew is unknown
  (``skew_known`` false, taken as 0). An asymmetric path shows up as skew: half the difference.
  A clock's skew drifts slowly, but ``(f - b) / 2`` swings whenever the path's delay changes,
  because ``f`` is measured here at once and ``b`` arrives later, from the other side. So the
  skew reported is the median of these estimates over the last ``SKEW_HISTORY_SECONDS``, and the
  corrected lag is ``f - skew``. Without that median, for a few seconds after a WAN delay dropped,
  the estimate said the target's clock was 277 ms behind. The p99 lag minus that skew then passed
  the 1 s degraded bar, though no heartbeat took more than 732 ms (session 12's CI, the
  split-brain test).
* **MirrorMaker's offset lag**: for every topic mirrored from source to target, the source's end
  offsets minus the mirrored topic's (MirrorMaker keeps offsets 1:1 for a topic it mirrors from its
  start), summed over partitions; ``-1`` when a cluster does not answer. This covers the data topics,
  not only the heartbeats.

Each report (:class:`RegionLag`, ``region_lag/1``) goes to the target's ``region_lag`` topic (and so,
mirrored, everywhere), into the ``region_lag`` table (a worker's agent) and, as ``metric/1`` points
(service ``replication``, metrics ``lag_ms`` and ``offset_lag``, labels ``source`` and ``target``,
tenant ``platform``), onto the metrics topic, where the detectors score them like any other series:
a lag spike is an anomaly.

>>> skew_estimate(30.0, 10.0)
(10.0, 20.0)
>>> t = LagTracker("b", window_seconds=10.0, since=100.0)
>>> from regions.heartbeat import heartbeat
>>> for seq, (sent, arrived) in enumerate([(101.0, 101.02), (102.0, 102.03), (104.0, 104.01)]):
...     t.beat(heartbeat("a", seq if seq < 2 else 3, sent), arrived)
>>> r = t.reports(105.0, {"a": 0})[0]
>>> (r.source, r.target, r.samples, r.missing, round(r.lag_p50_ms), round(r.lag_max_ms), r.skew_known)
('a', 'b', 3, 1, 20, 30, False)
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.kafka.security import client_kwargs
from core.settings import Settings
from core.kafka.topics import tenant_topic
from schemas.events import MetricPoint, RegionHeartbeat
from streams.publisher import OutputRecord
from core.tenant_names import PLATFORM

log = logging.getLogger(__name__)
#: How long a cluster may take to answer the offset probe before its lag counts as unknown.
PROBE_TIMEOUT_SECONDS = 2.0
#: The skew reported is the median of the estimates of this long (see the module's docstring).
SKEW_HISTORY_SECONDS = 60.0


class RegionLag(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="schema", tag="region_lag/1"):
    """One measurement of the pair ``source`` → ``target``, by the target's agent at ``ts``."""

    ts: float
    source: str
    target: str
    samples: int  # heartbeats that arrived within the window
    lag_p50_ms: float | None  # raw: arrival (target clock) - origin (source clock); None without samples
    lag_p99_ms: float | None
    lag_max_ms: float | None
    skew_ms: float  # estimated target clock - source clock (0 while unknown)
    skew_known: bool
    lag_corrected_ms: float | None  # lag_p50_ms - skew_ms
    offset_lag: int  # records on the source's mirrored topics not yet on the target; -1 unknown
    received: int  # heartbeats of the source received since the agent started
    missing: int  # gaps in their sequence numbers
    last_sequence: int  # -1 before the first
    last_seen_s: float  # seconds since a heartbeat of the source last arrived; -1 never


def skew_estimate(forward_ms: float, backward_ms: float) -> tuple[float, float]:
    """``(skew, corrected lag)`` from the raw lags of both directions (see the module's docstring)."""
    skew = (forward_ms - backward_ms) / 2
    return skew, forward_ms - skew


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of a non-empty sorted list.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    """
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


@dataclass
class _Pair:
    """What the target saw of one source's heartbeats."""

    window: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival, lag ms)
    fresh: list[float] = field(default_factory=list)  # lags since the last metric points
    received: int = 0
    missing: int = 0
    last_sequence: int = -1
    last_origin: float = 0.0
    last_arrival: float | None = None
    skews: deque[tuple[float, float]] = field(default_factory=deque)  # (report time, skew estimate ms)


class LagTracker:
    """Heartbeats arriving in region ``target`` → per-source lag statistics (pure, no I/O).

    ``since`` is when the agent started (beats sent before it are counted, not measured)."""

    def __init__(self, target: str, window_seconds: float, since: float):
        self.target = target
        self.window_seconds = window_seconds
        self.since = since
        self.pairs: dict[str, _Pair] = {}
        self._reverse: dict[str, float] = {}  # source -> its p50 raw lag of target -> source

    def beat(self, beat: RegionHeartbeat, arrival: float) -> None:
        """A heartbeat of ``beat.source`` arrived at ``arrival`` (the target's clock)."""
        pair = self.pairs.setdefault(beat.source, _Pair())
        if pair.last_sequence >= 0 and beat.ts <= pair.last_origin:
            return  # a duplicate
        if 0 <= pair.last_sequence < beat.sequence - 1:
            pair.missing += beat.sequence - pair.last_sequence - 1
        pair.received += 1
        pair.last_sequence, pair.last_origin, pair.last_arrival = beat.sequence, beat.ts, arrival
        if beat.ts >= self.since:
            lag_ms = (arrival - beat.ts) * 1000
            pair.window.append((arrival, lag_ms))
            pair.fresh.append(lag_ms)

    def remote_report(self, report: RegionLag) -> None:
        """Another region's report: the reverse direction of a pair of ours gives its skew."""
        if report.source == self.target and report.target != self.target and report.lag_p50_ms is not None:
            self._reverse[report.target] = report.lag_p50_ms

    def last_arrival(self, source: str) -> float | None:
        pair = self.pairs.get(source)
        return None if pair is None else pair.last_arrival

    def reports(self, now: float, offset_lags: dict[str, int]) -> list[RegionLag]:
        """One report per source seen (or with a known offset lag) other than the target itself."""
        sources = sorted((set(self.pairs) | set(offset_lags)) - {self.target})
        return [self._report(source, now, offset_lags.get(source, -1)) for source in sources]

    def _report(self, source: str, now: float, offset_lag: int) -> RegionLag:
        pair = self.pairs.setdefault(source, _Pair())
        while pair.window and pair.window[0][0] < now - self.window_seconds:
            pair.window.popleft()
        lags = sorted(lag for _, lag in pair.window)
        p50 = percentile(lags, 50) if lags else None
        reverse = self._reverse.get(source)
        skew, corrected = 0.0, p50
        if p50 is not None and reverse is not None:
            pair.skews.append((now, skew_estimate(p50, reverse)[0]))
            while pair.skews[0][0] < now - SKEW_HISTORY_SECONDS:
                pair.skews.popleft()
            skew = statistics.median(estimate for _, estimate in pair.skews)
            corrected = p50 - skew
        return RegionLag(
            ts=now, source=source, target=self.target, samples=len(lags), lag_p50_ms=p50,
            lag_p99_ms=percentile(lags, 99) if lags else None, lag_max_ms=lags[-1] if lags else None,
            skew_ms=skew, skew_known=reverse is not None and p50 is not None, lag_corrected_ms=corrected,
            offset_lag=offset_lag, received=pair.received, missing=pair.missing, last_sequence=pair.last_sequence,
            last_seen_s=-1.0 if pair.last_arrival is None else max(0.0, now - pair.last_arrival))

    def points(self, now: float, offset_lags: dict[str, int]) -> list[MetricPoint]:
        """``metric/1`` points for the detectors: per source, the largest lag since the last call
        (a spike is not averaged away) and the known offset lags."""
        points = []
        for source, pair in sorted(self.pairs.items()):
            if source != self.target and pair.fresh:
                points.append(_point(now, source, self.target, "lag_ms", max(pair.fresh)))
            pair.fresh.clear()
        points += [_point(now, source, self.target, "offset_lag", float(lag))
                   for source, lag in sorted(offset_lags.items()) if lag >= 0 and source != self.target]
        return points


def _point(now: float, source: str, target: str, metric: str, value: float) -> MetricPoint:
    return MetricPoint(ts=now, tenant=PLATFORM, region=target, service="replication", metric=metric, value=value,
                       labels={"source": source, "target": target})


def lag_metrics_topic(settings: Settings) -> str:
    """Where the lag points go: the metrics topic (``platform.<metrics>`` with tenant topics on)."""
    return tenant_topic(PLATFORM, settings.topic_metrics) if settings.tenant_topics else settings.topic_metrics


def lag_records(settings: Settings, reports: Iterable[RegionLag], points: Iterable[MetricPoint]) -> list[OutputRecord]:
    """Reports for the ``region_lag`` topic (keyed by pair) and points for the metrics topic
    (:func:`lag_metrics_topic`; keyed by series)."""
    metrics = lag_metrics_topic(settings)
    out: list[OutputRecord] = [(settings.topic_region_lag, f"{r.source}>{r.target}".encode(), msgspec.json.encode(r))
                               for r in reports]
    return out + [(metrics, p.series_key.encode(), msgspec.json.encode(p)) for p in points]


_lag_decoder = msgspec.json.Decoder(RegionLag)


def decode_lag(payload: bytes | None) -> RegionLag:
    """A ``region_lag/1`` record; ``msgspec.ValidationError`` / ``DecodeError`` if it is none."""
    return _lag_decoder.decode(payload or b"")


class OffsetLagProbe:
    """MirrorMaker's offset lag of every ``source`` → ``settings.region`` flow (see the module's
    docstring), asked of the clusters in ``bootstraps`` (region -> host:port)."""

    def __init__(self, settings: Settings, bootstraps: dict[str, str]):
        self.settings = settings
        self.bootstraps = bootstraps
        self._clients: dict[str, tuple[AIOKafkaAdminClient, AIOKafkaConsumer]] = {}

    async def close(self) -> None:
        for admin, consumer in self._clients.values():
            await admin.close()
            await consumer.stop()
        self._clients.clear()

    async def measure(self) -> dict[str, int]:
        """Offset lag per source region (``-1``: a cluster did not answer in time)."""
        own = self.settings.region
        prefixes = tuple(f"{source}." for source in self.bootstraps if source != own)
        mirrored = await self._call(own, self._end_offsets, prefixes)
        if mirrored is None:
            return {source: -1 for source in self.bootstraps if source != own}
        result = {}
        for source in self.bootstraps:
            if source == own:
                continue
            prefix = f"{source}."
            topics = {t[len(prefix):]: t for t in {tp.topic for tp in mirrored} if t.startswith(prefix)}
            ends = await self._call(source, self._end_offsets, set(topics)) if topics else {}
            if ends is None:
                result[source] = -1
                continue
            result[source] = sum(max(0, end - mirrored.get(TopicPartition(topics[tp.topic], tp.partition), 0))
                                 for tp, end in ends.items())
        return result

    async def _call(self, region: str, fn, topics):  # noqa: ANN001, ANN202 - a timeout around one probe
        try:
            return await asyncio.wait_for(fn(region, topics), PROBE_TIMEOUT_SECONDS)
        except Exception as exc:  # unreachable or timing out: unknown this time
            log.debug("offset probe of %s failed: %r", region, exc)
            return None

    async def _end_offsets(self, region: str, topics: set[str] | tuple[str, ...]) -> dict[TopicPartition, int]:
        """End offsets of ``topics`` on ``region``'s cluster (a tuple: the topics with one of these
        prefixes)."""
        admin, consumer = await self._client(region)
        if isinstance(topics, tuple):
            names = sorted(t for t in await admin.list_topics() if t.startswith(topics))
        else:
            names = sorted(topics)
        described = await admin.describe_topics(names) if names else []
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in described if not d.get("error_code")
                      for p in d["partitions"]]
        return await consumer.end_offsets(partitions) if partitions else {}

    async def _client(self, region: str) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if region not in self._clients:
            settings = self.settings.model_copy(update={"kafka_bootstrap": self.bootstraps[region]})
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=3000,
                                        **client_kwargs(settings))
            consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None,
                                        request_timeout_ms=3000, **client_kwargs(settings))
            await admin.start()
            await consumer.start()
            self._clients[region] = (admin, consumer)
        return self._clients[region]


async def latest_lag(settings: Settings, bootstraps: dict[str, str], wait_seconds: float = 3.0) -> list[RegionLag]:
    """The last report of every pair, read from the ``region_lag`` topic of each live cluster in
    ``bootstraps`` (its own agent's reports)."""
    latest: dict[tuple[str, str], RegionLag] = {}
    for region, bootstrap in bootstraps.items():
        settings_of = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    request_timeout_ms=3000, **client_kwargs(settings_of))
        try:
            await asyncio.wait_for(consumer.start(), wait_seconds)
            tps = [TopicPartition(settings.topic_region_lag, 0)]  # the agent's topic has one partition
            if settings.topic_region_lag not in await consumer.topics():
                continue
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - 64))
            batches = await consumer.getmany(timeout_ms=int(wait_seconds * 1000))
            for records in batches.values():
                for record in records:
                    try:
                        report = decode_lag(record.value)
                    except msgspec.MsgspecError:
                        continue
                    latest[report.source, report.target] = report
        except Exception as exc:  # a cluster that does not answer has nothing to show
            log.debug("no lag read from %s: %r", region, exc)
        finally:
            await consumer.stop()
    return sorted(latest.values(), key=lambda r: (r.source, r.target))
