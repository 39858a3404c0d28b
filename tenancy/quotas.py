"""Per-tenant quotas and the token bucket that enforces rates.

:class:`RateLimiter` holds one token bucket per key: ``rate_per_second`` tokens flow in, at most
``burst`` are kept. :meth:`RateLimiter.try_acquire` takes ``cost`` tokens or says how long until
they exist (the API answers 429 with that as Retry-After); :meth:`RateLimiter.take` grants as many
of ``wanted`` whole tokens as exist (the ingest path splits a batch at the quota with it).

>>> limiter = RateLimiter(rate_per_second=2.0, burst=2.0)
>>> limiter.try_acquire("acme", now=0.0), limiter.try_acquire("acme", now=0.0)
(0.0, 0.0)
>>> limiter.try_acquire("acme", now=0.0)  # empty: one token flows in every half second
0.5
>>> limiter.try_acquire("globex", now=0.0)  # another key has its own bucket
0.0
>>> limiter.take("acme", 10, now=1.0)  # a second later: two tokens again, never more than burst
2

:class:`Quotas` are a tenant's limits: settings defaults (``M1_QUOTA_*``) merged with the tenant's
overrides in the registry (:func:`tenant_quotas`).

>>> from core.settings import Settings
>>> tenant_quotas(Settings(quota_points_per_second=1000), None, "acme")
Quotas(points_per_second=1000.0, max_series=5000, requests_per_second=50.0)

:class:`IngestQuotas` applies a worker's ingest quotas to a batch of points, by series:

>>> import tempfile, pathlib
>>> settings = Settings(home=pathlib.Path(tempfile.mkdtemp()), quota_points_per_second=3, quota_max_series=2)
>>> live = {"acme|r|s|m|a"}  # acme holds one series; b is new and may come, c is new and may not
>>> IngestQuotas(settings).admit({"acme|r|s|m|a": 2, "acme|r|s|m|b": 2, "acme|r|s|m|c": 1},
...                              live.__contains__, held=lambda tenant: 1, now=0.0)
{'acme|r|s|m|c': (0, "quota: tenant 'acme' over 2 series"), 'acme|r|s|m|b': (1, "quota: tenant 'acme' over 3 points/s")}
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from core.settings import Settings
from core.tenant_names import series_tenants

log = logging.getLogger(__name__)




#: How long :func:`tenant_quotas` reuses a tenant's quotas before reading the registry again.
QUOTA_CACHE_SECONDS = 5.0


class RateLimiter:
    """Token buckets by key: ``rate_per_second`` tokens per second, at most ``burst`` held.

    Thread-safe. Memory stays bounded by the keys active within ``burst / rate_per_second``
    seconds: a bucket that has refilled is indistinguishable from a new one and is forgotten
    (swept whenever the number of buckets doubled since the last sweep).
    """

    def __init__(self, rate_per_second: float, burst: float):
        if not rate_per_second > 0 or not burst > 0:
            raise ValueError(f"rate_per_second and burst must be positive (got {rate_per_second}, {burst})")
        self.rate = float(rate_per_second)
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._sweep_at = 1024
        self._lock = threading.Lock()

    def try_acquire(self, key: str, now: float | None = None, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket and return 0.0, or take nothing and return
        the seconds until ``cost`` tokens exist (``inf`` if ``cost`` exceeds ``burst``)."""
        with self._lock:
            now, tokens = self._refill(key, now)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return math.inf if cost > self.burst else (cost - tokens) / self.rate

    def take(self, key: str, wanted: int, now: float | None = None) -> int:
        """Take up to ``wanted`` whole tokens from ``key``'s bucket; returns how many were taken."""
        with self._lock:
            now, tokens = self._refill(key, now)
            granted = min(wanted, int(tokens + 1e-9))  # 0.1 s at 100/s is 10 tokens, not 9.999...
            self._buckets[key] = (tokens - granted, now)
            return granted

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, key: str, now: float | None) -> tuple[float, float]:
        """(now, tokens in ``key``'s bucket at now); sweeps refilled buckets when due."""
        now = time.monotonic() if now is None else now
        if len(self._buckets) >= self._sweep_at:
            self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate < self.burst}
            self._sweep_at = max(1024, 2 * len(self._buckets))
        tokens, at = self._buckets.get(key, (self.burst, now))
        return now, min(self.burst, tokens + max(0.0, now - at) * self.rate)


class LimiterPool:
    """One :class:`RateLimiter` per rate, so each tenant's bucket refills at its own quota
    (a burst of one second's worth, at least one). Thread-safe.

    >>> pool = LimiterPool()
    >>> pool.at(2.0) is pool.at(2.0), pool.at(2.0).burst
    (True, 2.0)
    """

    def __init__(self) -> None:
        self._limiters: dict[float, RateLimiter] = {}
        self._lock = threading.Lock()

    def at(self, rate: float) -> RateLimiter:
        """The limiter of ``rate``."""
        with self._lock:
            limiter = self._limiters.get(rate)
            if limiter is None:
                limiter = self._limiters[rate] = RateLimiter(rate, burst=max(rate, 1.0))
            return limiter


@dataclass(frozen=True)
class Quotas:
    """A tenant's limits: ingested points per second, distinct series held in the model bank,
    API requests per second. Rates allow a burst of one second's worth (at least one)."""

    points_per_second: float
    max_series: int
    requests_per_second: float

    @classmethod
    def defaults(cls, settings: Settings) -> Quotas:
        """The limits of a tenant without overrides (``M1_QUOTA_*``)."""
        return cls(float(settings.quota_points_per_second), int(settings.quota_max_series),
                   float(settings.quota_requests_per_second))

    def merged(self, overrides: dict[str, Any] | None) -> Quotas:
        """These quotas with ``overrides`` (a registry tenant's ``quotas``) applied; keys that
        are not quota names are ignored.

        >>> Quotas(10.0, 5, 1.0).merged({"max_series": "7", "colour": "blue"})
        Quotas(points_per_second=10.0, max_series=7, requests_per_second=1.0)
        """
        known = {f.name: f.type for f in fields(self)}
        changes = {name: (int if known[name] == "int" else float)(value)
                   for name, value in (overrides or {}).items() if name in known}
        return replace(self, **changes)


_cache: dict[tuple[int, str, Quotas], tuple[float, Any, Quotas]] = {}  # (id(registry), tenant, defaults) -> (expires, registry, quotas)
_cache_lock = threading.Lock()


def tenant_quotas(settings: Settings, registry: Any, tenant: str) -> Quotas:
    """The quotas of ``tenant``: settings defaults merged with ``registry.tenant(tenant).quotas``.

    ``registry`` may be None (defaults only); a tenant the registry does not know gets the
    defaults, and so does every tenant while the registry cannot be read (logged): ingestion and
    the API go on under the default quotas. Answers are reused for :data:`QUOTA_CACHE_SECONDS`
    per registry and tenant.
    """
    defaults = Quotas.defaults(settings)
    if registry is None:
        return defaults
    key, now = (id(registry), tenant, defaults), time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] > now and cached[1] is registry:
            return cached[2]
    try:
        entry = registry.tenant(tenant)
    except (LookupError, ValueError):  # unknown tenant (tenancy.registry.NotFound is a ValueError)
        entry = None
    except sqlite3.Error as exc:
        log.warning("registry unreadable (%s): tenant %r gets the default quotas", exc, tenant)
        entry = None
    quotas = defaults.merged(getattr(entry, "quotas", None))
    with _cache_lock:
        if len(_cache) >= 4096:  # drop expired answers; the entry keeps its registry alive, so ids stay unique
            for stale in [k for k, (expires, _, _) in _cache.items() if expires <= now]:
                del _cache[stale]
        _cache[key] = (now + QUOTA_CACHE_SECONDS, registry, quotas)
    return quotas


class IngestQuotas:
    """A worker's ingest quotas: per tenant, points per second (a token bucket charged as points
    reach the worker) and distinct series live in the model bank.

    Quotas come from the settings and, once the file exists, from the registry at
    ``settings.registry_file`` (looked for again every :data:`QUOTA_CACHE_SECONDS` until then, and
    while it cannot be opened); pass ``registry`` to use another one.
    """

    def __init__(self, settings: Settings, registry: Any = None):
        self.settings = settings
        self._registry = registry
        self._looked_at = -math.inf if registry is None else math.inf  # when the registry file was looked for
        self._limiters = LimiterPool()  # a tenant's bucket is in its rate's limiter
        self._lock = threading.Lock()

    def quotas(self, tenant: str) -> Quotas:
        """The tenant's quotas now."""
        return tenant_quotas(self.settings, self._open_registry(), tenant)

    def admit(self, points: Mapping[str, int], live: Callable[[str], bool], held: Callable[[str], int],
              now: float | None = None) -> dict[str, tuple[int, str]]:
        """Charge a batch to its tenants and say what goes over quota.

        ``points`` counts the batch's points by series (tenant: the key's prefix before ``|``), in
        batch order; ``live(series)`` tells whether the bank holds the series, ``held(tenant)``
        how many series it holds for the tenant. A series the bank does not hold is new: it is
        refused whole if its tenant already holds ``max_series``. Points go in batch order until
        the tenant's bucket is empty. Returns, for each series not wholly admitted, how many of its
        first points are admitted and why the rest are not (``quota: ...``). Costs a few dict
        operations per series and one bucket operation per tenant.
        """
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for series, tenant in zip(points, series_tenants(points)):
            by_tenant[tenant].append(series)
        refused: dict[str, tuple[int, str]] = {}
        for tenant, names in by_tenant.items():
            quotas = self.quotas(tenant)
            new = [series for series in names if not live(series)]
            room = max(0, quotas.max_series - held(tenant))
            if len(new) > room:
                reason = f"quota: tenant {tenant!r} over {quotas.max_series} series"
                refused.update((series, (0, reason)) for series in new[room:])
                names = [series for series in names if series not in refused]
            wanted = sum(map(points.__getitem__, names))
            granted = self._limiters.at(quotas.points_per_second).take(tenant, wanted, now)
            if granted == wanted:
                continue
            reason = f"quota: tenant {tenant!r} over {quotas.points_per_second:g} points/s"
            for series in names:
                if granted < points[series]:
                    refused[series] = (granted, reason)
                granted = max(0, granted - points[series])
        return refused

    def _open_registry(self) -> Any:
        if self._registry is None and time.monotonic() - self._looked_at >= QUOTA_CACHE_SECONDS:
            with self._lock:
                self._looked_at = time.monotonic()
                path = self.settings.registry_file
                if self._registry is None and path.exists():
                    from tenancy.registry import Registry  # the worker opens it only once an operator made it

                    try:
                        self._registry = Registry(path)
                    except (sqlite3.Error, OSError) as exc:
                        log.warning("registry %s unusable (%s): default quotas until it is", path, exc)
        return self._registry
