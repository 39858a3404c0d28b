"""The HTTP side of regions: ``GET /v1/route`` and ``GET /v1/regions`` (permission ``regions:read``).

Both answer from the snapshot of the region agent running in the same process
(:class:`regions.status.RegionStatus`, given to the API as ``regions=``): the route a load
balancer or client should take now, and the shared verdict behind it. Routes and region health
are platform data, no tenant's: every caller holding ``regions:read`` reads the same answer.
Without an agent (``M1_REGION`` empty, or ``m1 api``) both answer 503, as does a route whose
geography has no region up; an unknown geography is 404.
"""

from __future__ import annotations

from typing import Any

from api.params import Text
from api.route import Call, Refused
from regions.status import RegionSnapshot

GEO = Text("geo", "The client's geography (a key of the routing table); absent: every geography's route.",
           max_length=128, pattern=r"[A-Za-z0-9_.:\-/]+")

ROUTE_RESPONSE = {"type": "object", "properties": {
    "geo": {"type": "string"}, "regions": {"type": "array", "items": {"type": "string"}},
    "routes": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    "version": {"type": "integer"}, "decided_at": {"type": "number"}, "decided_by": {"type": "string"}},
    "required": ["version", "decided_at", "decided_by"]}
REGIONS_RESPONSE = {"type": "object", "properties": {
    "decided_by": {"type": "string"}, "decided_at": {"type": "number"}, "routing_version": {"type": "integer"},
    "regions": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "state": {"enum": ["healthy", "degraded", "down"]}, "reason": {"type": "string"},
        "views": {"type": "object", "additionalProperties": {"type": "string"}}}}},
    "observers": {"type": "object"}}, "required": ["decided_by", "regions"]}


def _snapshot(call: Call) -> RegionSnapshot:
    snapshot = call.api.regions.current() if call.api.regions is not None else None
    if snapshot is None:
        raise Refused(503, "no region agent runs in this process (set M1_REGION on the worker), or it has not "
                           "decided yet")
    return snapshot


async def route(call: Call) -> dict[str, Any]:
    snapshot, geo = _snapshot(call), call.params.get("geo")
    if geo is None:
        return snapshot.routes()
    try:
        answer = snapshot.route(geo)
    except KeyError:
        raise Refused(404, f"unknown geography {geo!r}; known: {', '.join(sorted(snapshot.table.routes))}") from None
    if not answer["regions"]:
        raise Refused(503, f"no region is up for {geo!r}")
    return answer


async def regions(call: Call) -> dict[str, Any]:
    return _snapshot(call).regions()
