"""Session fixtures of the multi-region tests: two and three local clusters with MirrorMaker 2.

Each set lives in its own tmp home (``<home>/regions/<name>``, ports picked free) and is stopped at
the end of the session. Memory: about 1.3 GB for two brokers and MirrorMaker, 2.5 GB for three;
a session that uses only one of the fixtures starts only that set. The agents the tests start
beat every 0.5 s (the default is 1 s), which halves the time to a failover or recovery.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from m1.settings import Settings
from regions.cluster import RegionSet

TWO = ["eu-west", "us-east"]
THREE = ["eu-west", "us-east", "ap-south"]


def _region_set(tmp_path_factory: pytest.TempPathFactory, names: list[str]) -> Iterator[RegionSet]:
    home = tmp_path_factory.mktemp(f"regions-{len(names)}")
    region_set = RegionSet(Settings(home=home, regions=names, heartbeat_interval=0.5), names)
    try:
        region_set.start()
        yield region_set
    finally:
        region_set.stop()


@pytest.fixture(scope="session")
def two_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionSet]:
    """eu-west and us-east, MirrorMaker 2 both ways."""
    yield from _region_set(tmp_path_factory, TWO)


@pytest.fixture(scope="session")
def three_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionSet]:
    """eu-west, us-east and ap-south, MirrorMaker 2 in a full mesh."""
    yield from _region_set(tmp_path_factory, THREE)


def region_settings(region_set: RegionSet, region: str) -> Settings:
    """Client settings of ``region``'s own cluster."""
    return region_set.settings.model_copy(update={"kafka_bootstrap": region_set.kafka(region).bootstrap(),
                                                  "region": region})
