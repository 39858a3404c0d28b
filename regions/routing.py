"""Geographic routing: each client geography to an ordered list of the regions that are not down.

Interface (stable; the region agent, the simulation and the API call exactly these)::

    router = Router({"eu": {"eu-west": 12.0, "us-east": 85.0}, ...})  # geo -> region -> RTT ms
    router = Router.for_regions(["eu-west", "us-east"])  # no proximity configured (see below)
    router.measure(geo, region, rtt_ms)       # a measured latency (smoothed) replaces the configured one
    table = router.route(states, decided_at)  # -> RoutingTable from the verdict's states
    table.regions_for(geo) -> list[str]       # KeyError for an unknown geography
    table.records(since=previous)             # [(key, value)] for the compacted topic, key = geo
    RoutingTable.from_records(values)         # the newest table back from the topic's values

Order: by cost (the smoothed measured RTT where there is one, else the configured proximity),
ties by region name. Down regions are left out; degraded ones keep their place (they still
serve; /v1/regions shows their state). The router has no clock and no state but the costs, so a
table is a function of the verdict and the costs: the agent calls :meth:`Router.route` with the
verdict right after every decision, so routing changes within the same decision as the failover
or recovery that causes it. ``version`` goes up by one whenever any geography's route changes.

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
    """Costs (RTT ms) from each geography to each region, and the tables they give."""

    def __init__(self, proximity: Mapping[str, Mapping[str, float]], smoothing: float = 0.02, jump: float = 0.15):
        if not 0 < smoothing <= 1 or jump <= 0:
            raise ValueError("need smoothing in (0, 1] and jump > 0")
        self.smoothing, self.jump = smoothing, jump
        self._configured = {g: dict(costs) for g, costs in sorted(proximity.items())}
        self._measured: dict[tuple[str, str], float] = {}
        self._outlier: dict[tuple[str, str], float] = {}  # relative offset of a lone far-off measurement
        self._order: dict[str, list[str]] = {}  # each geography's regions by cost, until a cost changes

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
        """The smoothed measured RTT if any, else the configured one."""
        return self._measured.get((geo, region), self._configured[geo][region])

    def measure(self, geo: str, region: str, rtt_ms: float) -> None:
        """Fold a measured RTT into the cost. The first measurement is taken whole; one within
        ``jump`` (relative) of the cost is smoothed in (weight ``smoothing``); one further off
        is held as a possible outlier, and taken whole when the next is off to the same side
        (a level shift: a route changed), so noise is averaged out but a real change is followed
        within two measurements."""
        if region not in self._configured[geo]:
            raise KeyError(f"{region!r} is not a region of geography {geo!r}")
        key = (geo, region)
        self._order.pop(geo, None)
        old = self._measured.get(key)
        off = 0.0 if old is None else rtt_ms / old - 1.0
        if old is None or (abs(off) > self.jump and self._outlier.get(key, 0.0) * off > 0):
            self._measured[key] = rtt_ms
            self._outlier.pop(key, None)
        elif abs(off) > self.jump:
            self._outlier[key] = off
        else:
            self._measured[key] = old + self.smoothing * (rtt_ms - old)
            self._outlier.pop(key, None)

    def route(self, states: Mapping[str, HealthState], decided_at: float,
              previous: RoutingTable | None = None) -> RoutingTable:
        """The table for ``states`` (regions missing from it count as down); its version is
        ``previous``'s when no route changed, else one more."""
        up = {r for r, state in states.items() if state is not HealthState.DOWN}
        routes = {geo: [r for r in self._ordered(geo) if r in up] for geo in self._configured}
        if previous is not None and previous.routes == routes:
            return previous
        return RoutingTable((previous.version if previous else 0) + 1, decided_at, routes)

    def _ordered(self, geo: str) -> list[str]:
        if geo not in self._order:
            self._order[geo] = sorted(self._configured[geo], key=lambda r: (self.cost(geo, r), r))
        return self._order[geo]
