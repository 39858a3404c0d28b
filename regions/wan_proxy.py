"""A TCP proxy that delays every byte by a one-way latency: a WAN link between regions, on loopback.

The kernel here has no ``netem``, so ``tc`` cannot add delay; this proxy can. Put it in front of a
broker listener whose ``advertised.listeners`` entry names the proxy, and every client that
bootstraps through it (producers, consumers, MirrorMaker 2) talks to the broker over the "WAN".

Contract:

- :class:`WanProxy` (asyncio): ``await start()`` binds ``listen`` (port 0 = any free port) and
  returns the bound ``(host, port)``; ``await stop()`` closes the listener and every connection.
  Each chunk read from one side is written to the other no earlier than ``latency`` seconds
  (client → upstream) or ``return_latency`` seconds (upstream → client; ``None`` = the same as
  ``latency``, ``0`` = one direction only) after it was read, in order. Both latencies can be
  changed while it runs; chunks read afterwards get the new delay (never overtaking earlier ones).
- :class:`BackgroundWanProxy`: the same proxy on an event loop of its own in a daemon thread, for
  synchronous code (tests, benchmarks); ``start()`` / ``stop()`` or ``with``.

A round trip through a 50 ms proxy to an echo server takes at least 100 ms:

>>> import asyncio, time
>>> async def echo(reader, writer):
...     writer.write(await reader.read(100)); await writer.drain(); writer.close()
>>> async def round_trip() -> float:
...     server = await asyncio.start_server(echo, "127.0.0.1", 0)
...     proxy = WanProxy(server.sockets[0].getsockname()[:2], latency=0.05)
...     host, port = await proxy.start()
...     reader, writer = await asyncio.open_connection(host, port)
...     began = time.monotonic()
...     writer.write(b"ping")
...     reply = await reader.read(100)
...     took = time.monotonic() - began
...     writer.close(); await proxy.stop(); server.close()
...     assert reply == b"ping"
...     return took
>>> asyncio.run(round_trip()) >= 0.1
True
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

#: Bytes read per chunk, and chunks in flight per direction before reading pauses (back pressure).
CHUNK = 64 * 1024
IN_FLIGHT = 1024


class WanProxy:
    """Forwards TCP connections from ``listen`` to ``upstream``, delaying each direction."""

    def __init__(self, upstream: tuple[str, int], latency: float = 0.0, return_latency: float | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0)):
        if latency < 0 or (return_latency is not None and return_latency < 0):
            raise ValueError("latencies are seconds >= 0")
        self.upstream = upstream
        self.latency = latency
        self.return_latency = return_latency
        self.listen = listen
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; only after ``start``."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return self._server.sockets[0].getsockname()[:2]

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound address."""
        self._server = await asyncio.start_server(self._accept, *self.listen)
        return self.address

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _delay(self, upstream_bound: bool) -> float:
        if upstream_bound or self.return_latency is None:
            return self.latency
        return self.return_latency

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        self._handlers.add(handler)
        try:
            await self._serve(client_reader, client_writer)
        except (OSError, asyncio.CancelledError):  # upstream unreachable, or stop(): the connection ends
            pass  # (a handler left cancelled is reported by asyncio as an unhandled error)
        finally:
            client_writer.transport.abort()
            self._handlers.discard(handler)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        tasks = [*self._direction(client_reader, up_writer, True), *self._direction(up_reader, client_writer, False)]
        try:  # both directions closed, or a reset on either side: the connection ends as a whole
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.transport.abort()

    def _direction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   upstream_bound: bool) -> list[asyncio.Task]:
        """One direction: a reader stamping each chunk with its due time, a sender holding it until then."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(IN_FLIGHT)
        return [asyncio.ensure_future(self._read(reader, queue, upstream_bound)),
                asyncio.ensure_future(self._send(queue, writer))]

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]],
                    upstream_bound: bool) -> None:
        while True:
            chunk = await reader.read(CHUNK)
            await queue.put((time.monotonic() + self._delay(upstream_bound), chunk))
            if not chunk:  # EOF, forwarded in turn
                return

    @staticmethod
    async def _send(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()


class BackgroundWanProxy:
    """A :class:`WanProxy` served by its own event loop in a daemon thread (for synchronous callers)."""

    def __init__(self, upstream: tuple[str, int], latency: float = 0.0, return_latency: float | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.proxy = WanProxy(upstream, latency, return_latency, listen)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    def set_latency(self, latency: float, return_latency: float | None = None) -> None:
        """New one-way delays for the chunks read from now on."""
        self.proxy.latency, self.proxy.return_latency = latency, return_latency

    def start(self) -> tuple[str, int]:
        """Start the loop thread and the proxy; returns the bound address."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wan-proxy", daemon=True)
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        """Stop the proxy, its connections and the thread (no-op when not started)."""
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> BackgroundWanProxy:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
