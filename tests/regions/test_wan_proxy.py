"""regions/wan_proxy.py on a real echo server on 127.0.0.1: the delay is applied (lower bounds only,
never a timing-tight upper bound), per direction, changeable while running, bytes intact and in order."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from core.kafka.local_broker import free_port
from regions.wan_proxy import WanProxy, WanProxyProcess


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[:2]
    server.close()


async def _round_trip(address: tuple[str, int], payload: bytes = b"ping") -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    began = time.monotonic()
    writer.write(payload)
    await writer.drain()
    reply = await reader.readexactly(len(payload))
    took = time.monotonic() - began
    writer.close()
    return took, reply


async def test_both_directions_are_delayed(echo_server: tuple[str, int]) -> None:
    proxy = WanProxy(echo_server, latency=0.15)
    address = await proxy.start()
    try:
        took, reply = await _round_trip(address)
    finally:
        await proxy.stop()
    assert reply == b"ping"
    assert took >= 0.3


async def test_one_direction_only(echo_server: tuple[str, int]) -> None:
    proxy = WanProxy(echo_server, latency=0.0, return_latency=0.2)
    address = await proxy.start()
    try:
        took, _ = await _round_trip(address)
        proxy.latency, proxy.return_latency = 0.25, 0.0  # changed while running: new chunks get it
        took_after, _ = await _round_trip(address)
    finally:
        await proxy.stop()
    assert took >= 0.2
    assert took_after >= 0.25


async def test_large_payload_arrives_whole_and_in_order(echo_server: tuple[str, int]) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    proxy = WanProxy(echo_server, latency=0.02)
    address = await proxy.start()
    try:
        took, reply = await _round_trip(address, payload)
    finally:
        await proxy.stop()
    assert reply == payload
    assert took >= 0.04


async def test_half_close_is_forwarded_and_a_reset_ends_the_connection(echo_server: tuple[str, int]) -> None:
    proxy = WanProxy(echo_server, latency=0.05)
    reader, writer = await asyncio.open_connection(*await proxy.start())
    writer.write(b"last words")
    writer.write_eof()  # the echo server answers, then closes on our EOF: both EOFs cross the proxy
    assert await asyncio.wait_for(reader.read(), 10) == b"last words"
    writer.close()
    await proxy.stop()

    async def reset_after_one_byte(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(1)
        w.transport.abort()

    rude = await asyncio.start_server(reset_after_one_byte, "127.0.0.1", 0)
    proxy = WanProxy(rude.sockets[0].getsockname()[:2], latency=0.05)
    reader, writer = await asyncio.open_connection(*await proxy.start())
    try:
        writer.write(b"x")
        assert await asyncio.wait_for(reader.read(10), 10) == b""  # ended, not left hanging
    finally:
        writer.close()
        await proxy.stop()
        rude.close()


async def test_stop_cuts_open_connections_and_unreachable_upstream_closes(echo_server: tuple[str, int]) -> None:
    proxy = WanProxy(echo_server)
    reader, writer = await asyncio.open_connection(*await proxy.start())
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    await proxy.stop()
    assert await asyncio.wait_for(reader.read(10), 5) == b""  # cut, not left hanging
    writer.close()

    dead = WanProxy(("127.0.0.1", free_port()))  # nothing listens there
    reader, writer = await asyncio.open_connection(*await dead.start())
    try:
        assert await asyncio.wait_for(reader.read(10), 5) == b""
    finally:
        writer.close()
        await dead.stop()


def _blocking_round_trip(address: tuple[str, int]) -> float:
    with socket.create_connection(address, timeout=5) as sock:
        began = time.monotonic()
        sock.sendall(b"hello")
        reply = b""
        while len(reply) < 5:
            reply += sock.recv(5)
        took = time.monotonic() - began
    assert reply == b"hello"
    return took


def test_the_proxy_process_serves_synchronous_callers_and_takes_new_latencies(echo_server_sync: tuple[str, int]) -> None:
    with WanProxyProcess(echo_server_sync, latency=0.1) as proxy:
        address = proxy.address
        assert _blocking_round_trip(address) >= 0.2
        proxy.set_latency(0.0, return_latency=0.5)
        assert _blocking_round_trip(address) >= 0.5
    with pytest.raises(OSError):  # stopped: the process and its listener are gone
        _blocking_round_trip(address)


@pytest.fixture
def echo_server_sync() -> Iterator[tuple[str, int]]:
    """The echo server on a background loop of its own, for a synchronous test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(asyncio.start_server(_echo, "127.0.0.1", 0), loop).result(5)
    yield server.sockets[0].getsockname()[:2]
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_the_proxy_process_answers_a_caller_holding_many_descriptors(echo_server_sync: tuple[str, int]) -> None:
    """A long test session holds more than 1,024 descriptors: the proxy's pipes are numbered past
    what ``select()`` takes (session 12's first CI run of the process proxy failed on it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with WanProxyProcess(echo_server_sync, latency=0.05) as proxy:
            assert proxy._process.stdout.fileno() > 1024
            proxy.set_latency(0.1)
            assert _blocking_round_trip(proxy.address) >= 0.2
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
