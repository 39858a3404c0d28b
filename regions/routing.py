"""Geographic routing: each client geography to an ordered list of the regions that are not down.

Interface (stable; the region agent, the simulation and the API call exactly these)::

    router = Router({"eu": {"eu-west": 12.0, "us-east": 85.0}, ...})  # geo -> region -> RTT ms
    router = Router.for_regions(["eu-west", "us-east"])  # no proximity configured (see below)
    router.measure(geo, region, rtt_ms)       # a measured latency: evidence for or against the order
    table = router.route(states, decided_at)  # -> RoutingTable from the verdict's states
    table.regions_for(geo) -> list[str]       # KeyError for an unknown geography
    table.records(since=previous)             # [(key, value)] for the compacted topic, key = geo
    RoutingTable.from_records(values)         # the newest table back from the topic's values

Order: the configured proximity (ties by region name) is the prior; measurements reorder two
regions only when they prove it wrong. For each (geography, region) the router keeps a running
mean and variance of the measured log RTT since its last level shift: the mean restarts on a
shift (two measurements in a row more than ``jump`` off to the same side, or a CUSUM of the
residuals for smaller ones) and is then the plain mean of the measurements since, until it
has ``1 / smoothing`` - 1 of them; only then does it turn exponential with weight ``smoothing``, to
follow a slow drift. Latency that changes in steps is thus estimated by the mean of its current
step, whose standard error keeps shrinking until the window is reached: with ``smoothing`` 0.02
it stopped at 0.43 % for a difference of two 3 % probes, so a change that left two regions less
than about 0.85 % apart came and went with the noise instead of being proven (0.21 % at 0.005;
docs/benchmarks.md, "Multi-region simulation"). Two regions a before b in the prior swap when
a's mean exceeds b's by more than ``evidence`` standard errors of the difference, and swap back
when it is no longer ``settle`` of them (hysteresis). A near tie (two regions 0.5 % apart, each probe 3 % off) thus
keeps the configured order, and a real change (a route ×2) reorders within two measurements.
Down regions are left out; degraded ones keep their place (they still serve; /v1/regions shows
their state). A table is a function of the verdict and the router's order: the agent calls
:meth:`Router.route` with the verdict right after every decision, so routing changes within the
same decision as the failover or recovery that causes it. ``version`` goes up by one whenever
any geography's route changes.

On the compacted topic each geography is one record keyed by its name; its value is a
:class:`Route` (``schema`` ``route/1``) carrying the table's version, so the newest value per
key is the current route and a reader can tell which decision it came from.

>>> router = Router({"eu": {"eu-west": 10, "us-east": 80, "ap-south": 120},
...                  "in": {"eu-west": 110, "us-east": 200, "ap-south": 15}})
>>> up = {"eu-west": HealthState.HEALTHY, "us-east": HealthState.HEALTHY, "ap-south": HealthState.DEGRADED}
>>> t1 = router.route(up, decided_at=100.0)
>>> t1.version, t1.regions_for("eu"), t1.regions_for("in")
(1, ['eu-west', 'us-east', 'ap-south'], ['ap-south', 'eu-west', 'us-east'])
>>> t2 = router.route({**up, "eu-west": HealthState.DOWN}, decided_at=104.0, previous=t1)
>>> t2.version, t2.regions_for("eu")
(2, ['us-east', 'ap-south'])
>>> [key for key, _ in t2.records(since=t1)]
[b'eu', b'in']
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import msgspec

from regions.health import HealthState


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="route/1", tag_field="schema"):
    """One geography's ordered regions, as of table ``version`` decided at ``decided_at``."""

    geo: str
    regions: list[str]
    version: int
    decided_at: float


class RoutingTable(msgspec.Struct, frozen=True):
    """Every geography's route, one version."""

    version: int
    decided_at: float
    routes: dict[str, list[str]]

    def regions_for(self, geo: str) -> list[str]:
        return list(self.routes[geo])

    def records(self, since: RoutingTable | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) records for the compacted topic: every geography, or only those whose
        route differs from ``since``."""
        return [
            (geo.encode(), msgspec.json.encode(Route(geo, regions, self.version, self.decided_at)))
            for geo, regions in self.routes.items()
            if since is None or since.routes.get(geo) != regions
        ]

    @classmethod
    def from_records(cls, values: Iterable[bytes]) -> RoutingTable:
        """The table the newest value per geography gives (values in topic order; bad ones raise)."""
        newest: dict[str, Route] = {}
        for value in values:
            route = _route_decoder.decode(value)
            if route.geo not in newest or route.version >= newest[route.geo].version:
                newest[route.geo] = route
        latest = max(newest.values(), key=lambda r: r.version, default=None)
        return cls(
            version=latest.version if latest else 0,
            decided_at=latest.decided_at if latest else 0.0,
            routes={geo: newest[geo].regions for geo in sorted(newest)},
        )


_route_decoder = msgspec.json.Decoder(Route)


class Router:
    """The configured order of each geography's regions, reordered where measurements prove it wrong."""

    def __init__(self, proximity: Mapping[str, Mapping[str, float]], smoothing: float = 0.005, jump: float = 0.15,
                 evidence: float = 2.0, settle: float = 1.0):
        if not 0 < smoothing <= 1 or jump <= 0 or not 0 <= settle < evidence:
            raise ValueError("need smoothing in (0, 1], jump > 0 and 0 <= settle < evidence")
        self.smoothing, self.jump, self.evidence, self.settle = smoothing, math.log1p(jump), evidence, settle
        self._configured = {g: dict(costs) for g, costs in sorted(proximity.items())}
        self._prior = {g: sorted(costs, key=lambda r: (costs[r], r)) for g, costs in self._configured.items()}
        self._stats: dict[tuple[str, str], _Latency] = {}
        self._swapped: set[tuple[str, str, str]] = set()  # (geo, a, b): b goes before a, a first in the prior
        self._order: dict[str, list[str]] = {}  # each geography's regions, until a pair swaps

    @classmethod
    def for_regions(cls, regions: Iterable[str]) -> Router:
        """No proximity configured: each region is a geography of its own name, served first by
        that region, then by the others in name order.

        >>> Router.for_regions(["b", "a"]).route({"a": HealthState.HEALTHY, "b": HealthState.HEALTHY}, 0.0).routes
        {'a': ['a', 'b'], 'b': ['b', 'a']}
        """
        names = sorted(set(regions))
        return cls({g: {r: 0.0 if r == g else 1.0 for r in names} for g in names})

    @property
    def geos(self) -> list[str]:
        return list(self._configured)

    def cost(self, geo: str, region: str) -> float:
        """The running mean of the measured RTT (geometric) if any, else the configured one."""
        stats = self._stats.get((geo, region))
        return math.exp(stats.mean) if stats else self._configured[geo][region]

    def measure(self, geo: str, region: str, rtt_ms: float) -> None:
        """Fold a measured RTT into the running mean and variance of the pair's log RTT, then
        re-test each pair of the geography's regions it belongs to. A measurement more than
        ``jump`` (relative) off the mean is held; a second one off to the same side is a level
        shift (a route changed): the mean restarts from the two."""
        if region not in self._configured[geo]:
            raise KeyError(f"{region!r} is not a region of geography {geo!r}")
        key = (geo, region)
        if key in self._stats:
            self._stats[key].fold(math.log(rtt_ms), self.smoothing, self.jump)
        else:
            self._stats[key] = _Latency(math.log(rtt_ms))
        prior = self._prior[geo]
        for a, b in itertools.combinations(prior, 2):
            if region in (a, b) and self._retest(geo, a, b):
                self._order.pop(geo, None)

    def route(self, states: Mapping[str, HealthState], decided_at: float,
              previous: RoutingTable | None = None) -> RoutingTable:
        """The table for ``states`` (regions missing from it count as down); its version is
        ``previous``'s when no route changed, else one more."""
        up = {r for r, state in states.items() if state is not HealthState.DOWN}
        routes = {geo: [r for r in self._ordered(geo) if r in up] for geo in self._configured}
        if previous is not None and previous.routes == routes:
            return previous
        return RoutingTable((previous.version if previous else 0) + 1, decided_at, routes)

    def _retest(self, geo: str, a: str, b: str) -> bool:
        """Swap ``b`` (after ``a`` in the prior) ahead of ``a`` when ``a``'s mean log RTT exceeds
        ``b``'s by more than ``evidence`` standard errors of the difference; swap back when it is
        no longer ``settle`` of them. True if the pair's order changed."""
        sa, sb = self._stats.get((geo, a)), self._stats.get((geo, b))
        if sa is None or sb is None or min(sa.seen, sb.seen) < _MIN_SEEN:
            return False  # no evidence yet: the pair keeps its order
        diff = sa.mean - sb.mean
        se = math.sqrt(sa.noise * sa.weight + sb.noise * sb.weight)
        z = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
        pair = (geo, a, b)
        swapped = pair in self._swapped
        if not swapped and z > self.evidence:
            self._swapped.add(pair)
        elif swapped and z < self.settle:
            self._swapped.discard(pair)
        return swapped != (pair in self._swapped)

    def _ordered(self, geo: str) -> list[str]:
        """The prior order, with each region moved behind every region it lost a test to (a
        region's place: how many go before it, ties by the prior)."""
        if geo not in self._order:
            prior = self._prior[geo]
            behind = dict.fromkeys(prior, 0)
            for a, b in itertools.combinations(prior, 2):
                behind[a if (geo, a, b) in self._swapped else b] += 1
            self._order[geo] = sorted(prior, key=lambda r: (behind[r], prior.index(r)))
        return self._order[geo]


_MIN_SEEN = 3  # residuals a pair's two noise estimates need before they are evidence
_NOISE_WINDOW = 100  # measurements the noise variance is averaged over (exponentially, after the first)
_CUSUM_DRIFT, _CUSUM_LIMIT = 0.5, 8.0  # in standard deviations of one measurement


class _Latency:
    """Running statistics of one (geography, region)'s measured log RTT."""

    __slots__ = ("mean", "weight", "noise", "seen", "held", "rise", "fall")

    def __init__(self, x: float):
        self.mean = x  # running mean of log RTT since the last level shift
        self.weight = 1.0  # variance of the mean, in units of one measurement's variance
        self.noise = 0.0  # variance of one measurement (log RTT), estimated from the residuals
        self.seen = 0  # residuals folded into ``noise``
        self.held: float | None = None  # a lone far-off measurement, not folded in (yet)
        self.rise, self.fall = [0.0, 0.0, 0], [0.0, 0.0, 0]  # CUSUM up / down: score, sum and count of x

    def fold(self, x: float, smoothing: float, jump: float) -> None:
        """Fold log RTT ``x`` in (``jump`` in log units); see :meth:`Router.measure`."""
        off = x - self.mean
        if abs(off) > jump:
            if self.held is not None and (self.held - self.mean) * off > 0:  # twice, same side: a level shift
                self._restart((self.held + x) / 2, 2)
            else:
                self.held = x
            return
        self.held = None
        if self.seen >= _MIN_SEEN and self.noise > 0:  # a smaller shift: a two-sided CUSUM of the residuals
            z = off / math.sqrt(self.noise * (1.0 + self.weight))
            for side, sign in ((self.rise, 1.0), (self.fall, -1.0)):
                score = side[0] + sign * z - _CUSUM_DRIFT
                side[:] = [score, side[1] + x, side[2] + 1] if score > 0 else [0.0, 0.0, 0]
                if score > _CUSUM_LIMIT:  # the mean restarts from the measurements since the shift began
                    self._restart(side[1] / side[2], side[2])
                    return
        self.seen += 1
        self.noise += (off * off / (1.0 + self.weight) - self.noise) / min(self.seen, _NOISE_WINDOW)
        a = max(smoothing, self.weight / (1.0 + self.weight))  # the plain mean at first, then exponential
        self.mean += a * off
        self.weight = (1.0 - a) ** 2 * self.weight + a * a

    def _restart(self, mean: float, count: int) -> None:
        self.mean, self.weight, self.held = mean, 1.0 / count, None
        self.rise, self.fall = [0.0, 0.0, 0], [0.0, 0.0, 0]
