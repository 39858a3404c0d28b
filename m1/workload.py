"""A realistic multi-tenant, multi-region metric workload with injected anomalies.

Each series has a level, noise and a slow daily-like cycle. Anomaly episodes are
spikes (one point), level shifts and drifts (gradual ramps); the workload remembers
them so the demo can compare what it injected with what the pipeline detected.

>>> w = Workload(tenants=2, regions=2, series=8, anomalies=2, ticks=300, seed=1)
>>> batch = w.tick(0, ts=1_700_000_000.0)
>>> len(batch), {e.kind for e in w.episodes} <= set(EPISODE_KINDS)
(8, True)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from schemas.events import MetricPoint, encode

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1", "us-west-2", "eu-central-1", "sa-east-1"]
SERVICES = ["api", "checkout", "search", "auth", "payments", "catalog"]
METRICS = {"latency_ms": (120.0, 8.0), "cpu_pct": (45.0, 3.0), "requests_per_s": (800.0, 40.0), "error_rate": (0.5, 0.05)}
EPISODE_KINDS = ["spike", "level_shift", "drift"]
WARMUP_TICKS = 200  # the calibrated detectors stay quiet for their first 150 points

#: Malformed variants mixed into the stream to exercise dead-lettering.
INVALID_RECORDS = [
    b"{not json",
    b'{"schema":"metric/1","ts":1700000000,"tenant":"t","region":"r","service":"s","metric":"m","value":"high"}',
    b'{"schema":"metric/1","ts":1700000000,"tenant":"t","region":"r","service":"s","value":1}',
    b'{"schema":"metric/9","ts":1700000000,"tenant":"t","region":"r","service":"s","metric":"m","value":1}',
    b'{"schema":"metric/1","ts":1700000000,"tenant":"t","region":"r","service":"s","metric":"m","value":1e999}',
]


@dataclass(frozen=True)
class SeriesSpec:
    """One series: identity, level, noise and cycle period (ticks)."""

    tenant: str
    region: str
    service: str
    metric: str
    host: str
    level: float
    noise: float
    period: int

    @property
    def key(self) -> str:
        return f"{self.tenant}|{self.region}|{self.service}|{self.metric}|host={self.host}"


@dataclass(frozen=True)
class Episode:
    """An injected anomaly: which series, what kind, first tick and length in ticks."""

    series: int
    kind: str
    start: int
    length: int

    def offset(self, tick: int, noise: float) -> float:
        """Added to the normal value at ``tick`` (0 outside the episode)."""
        if not self.start <= tick < self.start + self.length:
            return 0.0
        if self.kind == "spike":
            return 12.0 * noise
        if self.kind == "level_shift":
            return 8.0 * noise
        return 15.0 * noise * (tick - self.start + 1) / self.length  # drift


class Workload:
    """Deterministic (seeded) generator of one point per series per tick."""

    def __init__(self, tenants: int, regions: int, series: int, anomalies: int, ticks: int, seed: int = 7):
        rng = random.Random(seed)
        self.rng = rng
        names = list(METRICS)
        self.series = [
            self._spec(i, tenants, regions, names[(i // (tenants * regions)) % len(names)], rng) for i in range(series)
        ]
        last_start = max(WARMUP_TICKS + 1, ticks - 40)
        self.episodes = [
            Episode(rng.randrange(series), kind, start, 1 if kind == "spike" else rng.randint(20, 40))
            for kind, start in ((rng.choice(EPISODE_KINDS), rng.randrange(WARMUP_TICKS, last_start)) for _ in range(anomalies))
        ]

    @staticmethod
    def _spec(i: int, tenants: int, regions: int, metric: str, rng: random.Random) -> SeriesSpec:
        level, noise = METRICS[metric]
        return SeriesSpec(
            tenant=f"tenant-{i % tenants + 1:02d}",
            region=REGIONS[(i // tenants) % regions % len(REGIONS)],
            service=SERVICES[i % len(SERVICES)],
            metric=metric,
            host=f"h{i:04d}",
            level=level * rng.uniform(0.8, 1.2),
            noise=noise,
            period=rng.randint(200, 400),
        )

    def value(self, index: int, tick: int) -> float:
        spec = self.series[index]
        cycle = 2.0 * spec.noise * math.sin(2 * math.pi * tick / spec.period)
        extra = sum(e.offset(tick, spec.noise) for e in self.episodes if e.series == index)
        return spec.level + cycle + self.rng.gauss(0.0, spec.noise) + extra

    def tick(self, tick: int, ts: float) -> list[MetricPoint]:
        """The points of every series at ``tick``, stamped ``ts``."""
        return [
            MetricPoint(ts, s.tenant, s.region, s.service, s.metric, self.value(i, tick), {"host": s.host})
            for i, s in enumerate(self.series)
        ]

    def records(self, tick: int, ts: float, invalid_share: float) -> list[tuple[bytes, bytes, bool]]:
        """``(key, value, is_valid)`` Kafka records of one tick, each valid point followed
        by an invalid record with probability ``invalid_share``."""
        out = []
        for point in self.tick(tick, ts):
            key = point.series_key.encode()
            out.append((key, encode(point), True))
            if self.rng.random() < invalid_share:
                out.append((key, self.rng.choice(INVALID_RECORDS), False))
        return out
