"""Split brain on real links (issue #10, item 4; docs/multi-region.md, "Split brain"): the path between
eu-west and us-east is cut (iptables FORWARD rules in the root namespace matching the two
namespaces' addresses), while both still reach ap-south and the root namespace. MirrorMaker runs in
each target region's namespace, so both flows between the two stop and nothing else does.

What the verdict promises (regions/verdict.py): each of the two sees the other down in its own
view, ap-south sees both healthy, and ap-south's vote decides: nobody is failed over anywhere, no
region publishes an event, and every region keeps routing each geography to itself. When the cut
heals, the two see each other healthy again, still without an event.
"""

from __future__ import annotations

import time

import pytest

from regions.health import HealthState
from tests.regions.mesh import NAMES, Mesh, events, routes, views

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
A, B, WITNESS = "eu-west", "us-east", "ap-south"
DOWN, HEALTHY = HealthState.DOWN, HealthState.HEALTHY


async def _view_where(running: Mesh, observer: str, since: float, check, timeout: float = 60):  # noqa: ANN001, ANN202
    async with views(running.bootstraps[observer]) as tail:
        return await tail.until(lambda v: v.at >= since and check(v.states), timeout)


async def test_a_cut_between_two_regions_fails_nobody_over_the_witness_decides(regions_mesh: Mesh) -> None:
    lab = regions_mesh.lab
    restarts = {region: regions_mesh.watchdog_status(region).restarts for region in NAMES}
    cut_at = time.time()
    regions_mesh.cut_between(A, B)
    try:
        # each side of the cut sees the other down, and still the witness healthy (the cut is only A-B)
        for observer, other in ((A, B), (B, A)):
            view = await _view_where(regions_mesh, observer, cut_at,
                                     lambda s, other=other: s[other] is DOWN and s[WITNESS] is HEALTHY)
            assert view is not None, f"{observer} never saw {other} down behind the cut"
        assert lab.pair_dropped() > 0
        # the witness sees both healthy, for as long as the two see each other down
        seen_at = time.time()
        view = await _view_where(regions_mesh, WITNESS, seen_at, lambda s: all(v is HEALTHY for v in s.values()), 10)
        assert view is not None, f"{WITNESS} lost one of the two: the cut was not only between {A} and {B}"
        for observer, other in ((A, B), (B, A)):  # still cut: their views after the witness's still say down
            assert await _view_where(regions_mesh, observer, seen_at, lambda s, other=other: s[other] is DOWN, 10)
    finally:
        healed_at = time.time()
        regions_mesh.lab.heal_between()
    for observer, other in ((A, B), (B, A)):
        view = await _view_where(regions_mesh, observer, healed_at, lambda s: all(v is HEALTHY for v in s.values()), 90)
        assert view is not None, f"{observer} did not see {other} healthy again after the heal"

    # no region was failed over (or even degraded) by the minority, anywhere, and routing never moved
    for region in NAMES:
        async with events(regions_mesh.bootstraps[region]) as tail:
            await tail.drain()
        changes = [e for e in tail.seen if e.ts >= cut_at and e.kind in ("failover", "degraded")]
        assert changes == [], f"{region} changed a verdict during the split: {changes}"
        async with routes(regions_mesh.bootstraps[region]) as tail:
            await tail.drain()
        moved = [r for r in tail.seen if r.decided_at >= cut_at and r.regions[:1] != [r.geo]]
        assert moved == [], f"{region} routed a geography away during the split: {moved}"
        newest = {r.geo: r.regions[:1] for r in tail.seen}  # the compacted topic's meaning: the last per key
        assert newest == {geo: [geo] for geo in NAMES}
    # nor did the MirrorMaker watchdogs take the cut for a stuck MirrorMaker: they probe from its namespace
    assert all(regions_mesh.watchdog_status(region).restarts == restarts[region] for region in NAMES)
