"""What a region's agent knows now: the shared verdict and the routing table, for the API.

Interface (stable; the region agent writes, the API reads)::

    status = RegionStatus()                    # give it to ApiService(..., regions=status)
    status.update(RegionSnapshot(region, decided_at, board.verdict, table, board.views))  # after each decision
    status.current() -> RegionSnapshot | None  # None until the agent's first decision

A snapshot is immutable and replaced whole, so a reader never sees a verdict of one decision
with the table of another. Its JSON forms are the answers of ``GET /v1/route`` and
``GET /v1/regions`` (regions/api.py).

>>> from regions.health import HealthState, RegionView
>>> from regions.routing import Router
>>> from regions.verdict import decide
>>> views = {"a": RegionView("a", 5.0, {"a": HealthState.HEALTHY, "b": HealthState.DOWN})}
>>> verdict = decide(["a", "b"], views)
>>> snap = RegionSnapshot("a", 5.0, verdict, Router.for_regions(["a", "b"]).route(verdict.states, 5.0), views)
>>> snap.route("b")
{'geo': 'b', 'regions': ['a'], 'version': 1, 'decided_at': 5.0, 'decided_by': 'a'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regions.health import RegionView
from regions.routing import RoutingTable
from regions.verdict import Verdict


@dataclass(frozen=True)
class RegionSnapshot:
    """One decision of ``region``'s agent at ``decided_at``: the verdict, the table made from it,
    and the newest view of each observer it was decided from."""

    region: str
    decided_at: float
    verdict: Verdict
    table: RoutingTable
    views: dict[str, RegionView]

    def route(self, geo: str) -> dict[str, Any]:
        """The route of one geography (``KeyError`` for an unknown one)."""
        return {"geo": geo, "regions": self.table.regions_for(geo), "version": self.table.version,
                "decided_at": self.table.decided_at, "decided_by": self.region}

    def routes(self) -> dict[str, Any]:
        """Every geography's route."""
        return {"routes": dict(self.table.routes), "version": self.table.version,
                "decided_at": self.table.decided_at, "decided_by": self.region}

    def regions(self) -> dict[str, Any]:
        """Every region's shared state, why, and each observer's local state of it; the observers'
        newest views' times."""
        v = self.verdict
        return {
            "decided_by": self.region, "decided_at": self.decided_at, "routing_version": self.table.version,
            "regions": [{"name": name, "state": state.value, "reason": v.reasons[name],
                         "views": {o: s.value for o, s in v.votes[name].items()}}
                        for name, state in v.states.items()],
            "observers": {o: {"at": view.at} for o, view in sorted(self.views.items())},
        }


class RegionStatus:
    """The newest snapshot; the agent replaces it after every decision."""

    def __init__(self) -> None:
        self._snapshot: RegionSnapshot | None = None

    def update(self, snapshot: RegionSnapshot) -> None:
        self._snapshot = snapshot

    def current(self) -> RegionSnapshot | None:
        return self._snapshot
