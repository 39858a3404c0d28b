"""GET /v1/route and GET /v1/regions on a real API server (tests/api_world.py), and `m1 route`
against it: the answers follow the region agent's snapshot, decision by decision."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m1.cli import app
from regions.routing import Router
from regions.status import RegionStatus
from tests.api_world import NOW, PROXIMITY, World, make_world, region_snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = make_world(tmp_path_factory.mktemp("regions-api"))
    yield world
    world.close()


@pytest.fixture(autouse=True)
def all_up(world: World) -> None:
    world.regions.update(region_snapshot())


def test_route_of_a_geography_and_of_all(world: World) -> None:
    reply = world.call("GET", "/v1/route?geo=de", world.key("viewer"))
    assert reply.status == 200
    assert reply.json == {"geo": "de", "regions": ["eu-west", "us-east", "ap-south"], "version": 1,
                          "decided_at": NOW, "decided_by": "eu-west"}
    every = world.call("GET", "/v1/route", world.key("viewer", "globex")).json  # no tenant's data: same for all
    assert every["routes"] == {"de": ["eu-west", "us-east", "ap-south"], "in": ["ap-south", "eu-west", "us-east"],
                               "us": ["us-east", "eu-west", "ap-south"]}


def test_a_failover_moves_the_route_in_the_next_answer(world: World) -> None:
    world.regions.update(region_snapshot(down=("eu-west",), at=NOW + 5))
    assert world.call("GET", "/v1/route?geo=de", world.key("operator")).json["regions"] == ["us-east", "ap-south"]
    regions = world.call("GET", "/v1/regions", world.key("operator")).json
    assert regions["decided_at"] == NOW + 5 and regions["routing_version"] == 1
    states = {r["name"]: (r["state"], r["reason"], r["views"]) for r in regions["regions"]}
    assert states["eu-west"] == ("down", "2 of 2 observers (ap-south, us-east) see it down; quorum 2",
                                 {"ap-south": "down", "us-east": "down"})
    assert states["us-east"][0] == "healthy" and set(regions["observers"]) == {"ap-south", "us-east"}


def test_bad_and_unknown_geographies_and_no_region_up(world: World) -> None:
    key = world.key("viewer")
    bad = world.call("GET", "/v1/route?geo=de%27%20OR%201", key)
    assert bad.status == 400 and "geo" in bad.json["error"]
    unknown = world.call("GET", "/v1/route?geo=mars", key)
    assert unknown.status == 404 and unknown.json["error"] == "unknown geography 'mars'; known: de, in, us"
    world.regions.update(replace(region_snapshot(), table=Router(PROXIMITY).route({}, NOW)))  # every region down
    none_up = world.call("GET", "/v1/route?geo=de", key)
    assert (none_up.status, none_up.json["error"]) == (503, "no region is up for 'de'")


def test_no_agent_answers_503(world: World) -> None:
    held, world.api.regions = world.api.regions, RegionStatus()  # an agent that has not decided yet
    try:
        for path in ("/v1/route?geo=de", "/v1/regions"):
            reply = world.call("GET", path, world.key("platform-admin"))
            assert reply.status == 503 and "no region agent" in reply.json["error"]
    finally:
        world.api.regions = held


def test_auditors_and_anonymous_callers_are_refused(world: World) -> None:
    assert world.call("GET", "/v1/route?geo=de", world.key("auditor")).status == 403
    assert world.call("GET", "/v1/regions").status == 401


def test_m1_route_goes_through_the_api(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("M1_HOME", str(tmp_path))
    monkeypatch.setenv("M1_WEB_PORT", str(world.server.port))
    monkeypatch.setenv("M1_WEB_BIND", "127.0.0.1")
    monkeypatch.setenv("M1_API_KEY", world.key("viewer"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        one = runner.invoke(app, ["route", "--geo", "us"])
        assert one.exit_code == 0, one.output
        assert "us-east, eu-west, ap-south" in one.output and "version 1" in one.output
        every = runner.invoke(app, ["route"])
        assert every.exit_code == 0 and all(g in every.output for g in ("de", "in", "us"))
        unknown = runner.invoke(app, ["route", "--geo", "mars"])
        assert unknown.exit_code == 2 and "unknown geography 'mars'" in unknown.output
        monkeypatch.setenv("M1_API_KEY", world.key("auditor"))
        get_settings.cache_clear()
        denied = runner.invoke(app, ["route", "--geo", "us"])
        assert denied.exit_code == 2 and "HTTP 403" in denied.output
    finally:
        get_settings.cache_clear()
