"""RED minutes of spans (rate, errors, p90 duration per operation and minute) and their state
per aggregate, partitioned like the metrics topic's series (#14).

Spans reach the RED state through an internal topic (:func:`red_topic`) keyed by their aggregate
key ``<tenant>|<service>`` (:func:`red_key`): each key lives in one partition, so one worker of the
group accounts all of a service's spans, and a minute's p90 is never computed from part of them.
:class:`RedBank` holds one :class:`RedMinutes` per key, with the source offsets it has accounted
(a record forwarded twice by a replayed source batch is accounted once), and hands out the
changed keys' states for the RED state's changelog topic (``streams.red_changelog``), which the
RED consumer writes in the transaction of the batch that changed them.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from core.settings import Settings
from schemas.events import MetricPoint
from sinks.checkpoints import StateRow

#: RED minutes close once spans this much later have been seen (or the topic is this long idle).
RED_GRACE_SECONDS = 60.0
#: Bounds of the RED state of one tenant: open (operation, minute) buckets, and durations kept
#: per bucket (a uniform sample beyond it, so its p90 is an estimate; counts stay exact).
RED_MAX_OPEN_PER_TENANT = 2_000
RED_MAX_SAMPLES = 2_048
RED_DURATION_METRIC = "span.duration.p90_ms"
RED_ERROR_METRIC = "span.error_rate"


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
    sampling beyond it, seeded with ``seed``, so a replay gives the same numbers).

    :class:`RedBank` keeps one per aggregate key (tenant and service): there a tenant's clock is
    the service's own, so it does not depend on which worker accounts the tenant's other services.
    """

    def __init__(self, grace_seconds: float = RED_GRACE_SECONDS, max_open: int = RED_MAX_OPEN_PER_TENANT,
                 max_samples: int = RED_MAX_SAMPLES, seed: str | int = 0) -> None:
        self.grace_ns = int(grace_seconds * 1e9)
        self.max_open, self.max_samples = max_open, max_samples
        self.open: dict[tuple[str, str, str, str, int], _Minute] = {}
        self.open_per_tenant: dict[str, int] = defaultdict(int)
        self._sample = random.Random(seed)
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
                tenant = resource_tenant(resource)
                tenants.add(tenant)
                minute = start // 60_000_000_000 * 60_000_000_000
                self.watermark_ns[tenant] = max(self.watermark_ns[tenant], start + row["Duration"])
                if minute < self.closed_ns[tenant]:
                    continue
                key = (tenant, resource_region(resource), row["ServiceName"], row["SpanName"][:256], minute)
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
        """Close every open minute if no span arrived for the grace period (wall clock), and no
        later one: a span of a later minute still counts, so when and where a pause happened (a
        worker stopped, a partition moved) does not change the minutes' numbers."""
        with self._lock:
            if time.monotonic() - self._last_add < self.grace_ns / 1e9 or not self.open:
                return []
            last = {}
            for tenant, *_, minute in self.open:
                last[tenant] = max(last.get(tenant, minute), minute)
            return [p for t in sorted(last) for p in self._close(t, last[t] + 60_000_000_000)]

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


def resource_tenant(resource: Mapping[str, str]) -> str:
    return resource.get("tenant") or resource.get("m1.tenant") or "default"


def resource_region(resource: Mapping[str, str]) -> str:
    return resource.get("cloud.region") or "unknown"


def red_topic(settings: Settings) -> str:
    """The internal topic of span summaries keyed by aggregate (created by the worker)."""
    return f"{settings.app_id}-red-spans"


def red_key(tenant: str, service: str) -> str:
    """The aggregate key of a service's spans: what one RED state is kept for."""
    return f"{tenant}|{service}"


class RedSpans(msgspec.Struct, array_like=True, frozen=True):
    """The spans of one source record for one aggregate key, as the RED state needs them:
    ``(start ns, duration ns, error, region, operation)`` each; ``source`` is the record's
    ``topic:partition`` and ``offset`` its offset (a replay is recognised by them)."""

    tenant: str
    service: str
    source: str
    offset: int
    spans: list[tuple[int, int, bool, str, str]]

    def rows(self) -> list[dict[str, Any]]:
        """The spans as the ``otel_traces`` rows :meth:`RedMinutes.add` reads."""
        return [{"Timestamp": start, "Duration": duration, "StatusCode": "Error" if error else "Ok",
                 "ResourceAttributes": {"tenant": self.tenant, "cloud.region": region}, "ServiceName": self.service,
                 "SpanName": operation} for start, duration, error, region, operation in self.spans]


def red_records(rows: Iterable[dict[str, Any]], topic: str, source: str, offset: int) -> list[tuple[str, bytes, bytes]]:
    """The records (to ``topic``) of one source record's spans, one per aggregate key."""
    by_key: dict[tuple[str, str], list[tuple[int, int, bool, str, str]]] = defaultdict(list)
    for row in rows:
        resource = row["ResourceAttributes"]
        by_key[(resource_tenant(resource), row["ServiceName"])].append(
            (row["Timestamp"], row["Duration"], row["StatusCode"] == "Error", resource_region(resource), row["SpanName"][:256]))
    return [(topic, red_key(tenant, service).encode(), _ENCODER.encode(RedSpans(tenant, service, source, offset, spans)))
            for (tenant, service), spans in by_key.items()]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(RedSpans)


def decode_red(value: bytes) -> RedSpans:
    """A record of the RED topic (``msgspec.DecodeError`` if it is not one)."""
    return _DECODER.decode(value)


class _Saved(msgspec.Struct, array_like=True):
    """One key's state as checkpointed: its minutes, clocks, sampler and accounted source offsets."""

    open: list[tuple[str, str, str, str, int, int, int, bytes]]
    open_per_tenant: dict[str, int]
    watermark_ns: dict[str, int]
    closed_ns: dict[str, int]
    sampler: list[Any]
    seen: dict[str, int]


class RedBank:
    """:class:`RedMinutes` per aggregate key, checkpointed and restored per key (see the module docstring).

    Thread-safe. :meth:`checkpoint` hands out rows ``(key, spans accounted, sealed state)`` of the
    keys changed since its last call, :meth:`restore` takes them back: the state msgpack (never
    unpickled) sealed with an HMAC under the deployment's state key and :attr:`state_key`, so a
    row moved to another key or altered is refused.

    The bank knows each partition's keys (those it got spans of, :meth:`add`, and those restored
    with it): a worker assigned a partition restores all its keys at once (:meth:`restore` with the
    partition), so the minutes a key left open are closed by the new owner's idle timer even if no
    span of the key comes again, and :meth:`release` drops them when the partition goes."""

    state_key = "red@1"

    def __init__(self, key: bytes, grace_seconds: float = RED_GRACE_SECONDS) -> None:
        self.key = key
        self.grace_seconds = grace_seconds
        self._minutes: dict[str, RedMinutes] = {}
        self._seen: dict[str, dict[str, int]] = {}
        self._spans: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._index: dict[str, set[str]] = {}  # partition -> its keys
        self._restored: set[str] = set()  # partitions restored since they were assigned
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._minutes)

    def minutes(self, key: str) -> RedMinutes:
        """The RED state of ``key`` (a fresh one if unknown)."""
        with self._lock:
            return self._state(key)

    def add(self, batches: Iterable[tuple[str, RedSpans]], partition: str | None = None) -> list[MetricPoint]:
        """Account ``(key, spans)`` (of ``partition``, ``topic:partition``, if given) in order, skipping
        spans of a source record already accounted; returns the points of the minutes that closed."""
        points: list[MetricPoint] = []
        with self._lock:
            for key, batch in batches:
                if partition is not None:
                    self._index.setdefault(partition, set()).add(key)
                seen = self._seen.setdefault(key, {})
                if batch.offset < seen.get(batch.source, -1) + 1:
                    continue  # a replayed source record: its spans are in this state already
                seen[batch.source] = batch.offset
                self._spans[key] = self._spans.get(key, 0) + len(batch.spans)
                self._dirty.add(key)
                points += self._state(key).add(batch.rows())
        return points

    def close_idle(self) -> list[MetricPoint]:
        """Close the minutes of every key that got no span for the grace period."""
        with self._lock:
            closed = {key: red.close_idle() for key, red in self._minutes.items()}
            self._dirty.update(key for key, points in closed.items() if points)
            return [p for points in closed.values() for p in points]

    def unrestored(self, partitions: Iterable[str]) -> list[str]:
        """Those ``partitions`` not restored (:meth:`restore`) since the bank got them, or since they
        were released or cleared."""
        with self._lock:
            return [p for p in partitions if p not in self._restored]

    def release(self, partitions: Iterable[str]) -> None:
        """Drop the keys of ``partitions`` (another worker owns them now), those restored with a
        partition and never given a span here too."""
        with self._lock:
            for partition in partitions:
                for key in self._index.pop(partition, ()):
                    self.discard(key)
                self._restored.discard(partition)

    def clear(self) -> None:
        """Forget every key and partition (the caller restores what it owns from the last commit)."""
        with self._lock:
            for held in (self._minutes, self._seen, self._spans, self._index, self._restored):
                held.clear()
            self._dirty.clear()

    def discard(self, key: str) -> None:
        """Forget ``key`` (its partition went to another worker, which saves it from now on)."""
        with self._lock:
            for held in (self._minutes, self._seen, self._spans):
                held.pop(key, None)
            self._dirty.discard(key)

    def checkpoint(self) -> list[StateRow]:
        """Sealed rows of every key changed since the last checkpoint."""
        with self._lock:
            rows = [(key, self._spans.get(key, 0), self._seal(key, self._spans.get(key, 0), self._dump(key)))
                    for key in sorted(self._dirty) if key in self._minutes]
            self._dirty.clear()
            return rows

    def restore(self, rows: Iterable[StateRow], partition: str | None = None) -> None:
        """Load saved keys not held yet; a row whose seal does not verify is skipped (that key starts
        afresh). With ``partition``: ``rows`` are all that partition's keys (it is restored)."""
        with self._lock:
            if partition is not None:
                self._restored.add(partition)
            for key, spans, sealed in rows:
                state = self._open(key, spans, sealed)
                if state is None:
                    continue
                if partition is not None:
                    self._index.setdefault(partition, set()).add(key)
                if key in self._minutes:
                    continue
                saved = msgspec.msgpack.decode(state, type=_Saved)
                red = self._state(key)
                for tenant, region, service, operation, minute, count, errors, durations in saved.open:
                    red.open[(tenant, region, service, operation, minute)] = _Minute(array("d", durations), count, errors)
                red.open_per_tenant.update(saved.open_per_tenant)
                red.watermark_ns.update(saved.watermark_ns)
                red.closed_ns.update(saved.closed_ns)
                version, internal, gauss = saved.sampler
                red._sample.setstate((version, tuple(internal), gauss))
                self._seen[key], self._spans[key] = dict(saved.seen), spans

    def _state(self, key: str) -> RedMinutes:
        red = self._minutes.get(key)
        if red is None:
            red = self._minutes[key] = RedMinutes(self.grace_seconds, seed=key)
        return red

    def _dump(self, key: str) -> bytes:
        red = self._minutes[key]
        return msgspec.msgpack.encode(_Saved(
            [(*k, m.spans, m.errors, m.durations_ms.tobytes()) for k, m in red.open.items()],
            dict(red.open_per_tenant), dict(red.watermark_ns), dict(red.closed_ns),
            list(red._sample.getstate()), self._seen.get(key, {})))

    def _seal(self, key: str, spans: int, state: bytes) -> bytes:
        return self._mac(key, spans, state) + state

    def _open(self, key: str, spans: int, sealed: bytes) -> bytes | None:
        mac, state = sealed[:32], sealed[32:]
        return state if hmac.compare_digest(mac, self._mac(key, spans, state)) else None

    def _mac(self, key: str, spans: int, state: bytes) -> bytes:
        message = b"".join(len(part).to_bytes(8, "big") + part
                           for part in (self.state_key.encode(), key.encode(), spans.to_bytes(8, "big", signed=True), state))
        return hmac.digest(self.key, message, hashlib.sha256)
