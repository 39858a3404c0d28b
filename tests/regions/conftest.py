"""Fixtures of the multi-region tests: two local clusters with MirrorMaker 2 (loopback), and three
regions in network namespaces with MirrorMaker 2 and an agent each (tests/regions/mesh.py).

Each set is started only when a test uses it, in its own tmp home: the two clusters for the module
that uses them; the three regions once per session, shared by the failover, partition,
split-brain and watchdog tests, which run last and together (:func:`pytest_collection_modifyitems`).
:func:`regions_mesh` puts the three regions back to their start before each test
(:meth:`Mesh.reset`: links healed, loss and WAN delay off, dead parts restarted) and waits until
every agent sees every region healthy, instead of starting new clusters. Memory: about 1.3 GB for
the two-cluster set, about 3.5 GB for the three regions (a MirrorMaker per region).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from core.settings import Settings
from regions.cluster import RegionSet
from tests.regions.mesh import NAMES, Mesh, mesh

TWO = ["eu-west", "us-east"]
#: The regions reached through a WAN proxy (no delay until a test sets one), and the watchdog's stall.
FAR = "ap-south"
WATCHDOG_STALL_S = 20.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of the shared three regions run last, together: the set stays up from the first of
    them to the end of the session, and nothing else competes with it for the machine."""
    items.sort(key=lambda item: "regions_mesh" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="module")
def two_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionSet]:
    """eu-west and us-east, MirrorMaker 2 both ways; agents started by the tests beat every 0.5 s."""
    home = tmp_path_factory.mktemp("regions-2")
    region_set = RegionSet(Settings(home=home, regions=TWO, heartbeat_interval=0.5), TWO)
    try:
        region_set.start()
        yield region_set
    finally:
        region_set.stop()


@pytest.fixture(scope="session")
def shared_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """eu-west, us-east and ap-south in namespaces (ap-south behind a WAN proxy), a MirrorMaker per
    region in its namespace, each supervised by ``m1 regions watchdog`` beside it, and an agent per
    region (lag window 4 s)."""
    with mesh(tmp_path_factory.mktemp("mesh"), NAMES, latency={FAR: 0.0},
              agent_env={"M1_LAG_WINDOW_SECONDS": "4"}) as running:
        running.start_watchdogs(stall_s=WATCHDOG_STALL_S)
        yield running


@pytest.fixture
def regions_mesh(shared_mesh: Mesh) -> Mesh:
    """The shared three regions, reset and with every region healthy everywhere."""
    shared_mesh.reset()
    asyncio.run(shared_mesh.ready())
    return shared_mesh


def region_settings(region_set: RegionSet, region: str) -> Settings:
    """Client settings of ``region``'s own cluster."""
    return region_set.settings.model_copy(update={"kafka_bootstrap": region_set.kafka(region).bootstrap(),
                                                  "region": region})
