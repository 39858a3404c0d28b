"""Reading a region's decisions back from its cluster: its ``region_events`` and current routes.

For the demo, the benchmarks and the tests, which watch what the agents published on the real
topics (a load balancer or client reads the routing topic the same way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.kafka.security import client_kwargs
from core.settings import Settings
from regions.routing import Route
from schemas.events import RegionEvent


async def read_topic(settings: Settings, topic: str, until: Callable[[list[bytes]], bool] = lambda _: True,
                     timeout: float = 10.0) -> list[bytes]:
    """Values of ``topic`` (partition 0, from the start) on ``settings``' cluster, read until
    ``until(values)`` holds after the end was reached, or ``timeout`` passes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=3000, **client_kwargs(settings))
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        while topic not in await consumer.topics():  # not created yet (the agent creates it on start)
            if time.monotonic() > deadline:
                return values
            await asyncio.sleep(0.5)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while True:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                values += [r.value for r in records if r.value is not None]
            caught_up = await consumer.position(tp) >= (await consumer.end_offsets([tp]))[tp]
            if (caught_up and until(values)) or time.monotonic() > deadline:
                return values
    finally:
        await consumer.stop()


def events_of(values: list[bytes]) -> list[RegionEvent]:
    return [msgspec.json.decode(v, type=RegionEvent) for v in values]


def routes_of(values: list[bytes]) -> dict[str, Route]:
    """The newest route per geography (the compacted topic's meaning)."""
    newest: dict[str, Route] = {}
    for value in values:
        route = msgspec.json.decode(value, type=Route)
        if route.geo not in newest or route.version >= newest[route.geo].version:
            newest[route.geo] = route
    return newest


async def wait_for_event(settings: Settings, region: str, kind: str, after: float, timeout: float) -> RegionEvent | None:
    """The first ``kind`` event about ``region`` decided at or after ``after`` on ``settings``'
    cluster (its own agent's decisions), or ``None`` after ``timeout`` seconds."""
    def found(values: list[bytes]) -> RegionEvent | None:
        return next((e for e in events_of(values) if e.region == region and e.kind == kind and e.ts >= after), None)

    values = await read_topic(settings, settings.topic_region_events, lambda vs: found(vs) is not None, timeout)
    return found(values)


async def wait_for_route(settings: Settings, geo: str, check: Callable[[list[str]], bool],
                         timeout: float) -> Route | None:
    """The current route of ``geo`` on ``settings``' cluster once ``check(regions)`` holds, or
    ``None`` after ``timeout`` seconds."""
    def current(values: list[bytes]) -> Route | None:
        route = routes_of(values).get(geo)
        return route if route is not None and check(route.regions) else None

    values = await read_topic(settings, settings.topic_routing, lambda vs: current(vs) is not None, timeout)
    return current(values)
