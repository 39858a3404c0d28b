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
- :class:`WanProxyProcess`: the same proxy in a process of its own (``python -m regions.wan_proxy``),
  for synchronous code (tests, benchmarks); ``start()`` / ``set_latency()`` / ``stop()`` or ``with``.
  A proxy sharing its caller's interpreter holds every byte of the link whenever that caller is
  busy (the likely cause of session 11's CI failure: both regions reaching ap-south through a
  proxy in the test runner saw it degraded at once, while ap-south saw itself healthy).

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

import argparse
import asyncio
import contextlib
import selectors
import subprocess
import sys
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


class WanProxyProcess:
    """A :class:`WanProxy` in a process of its own (``python -m regions.wan_proxy``), for synchronous
    callers: the bytes it carries never wait for the caller's interpreter (its other threads, its
    garbage collector). The process exits when its standard input closes, so it dies with its caller."""

    def __init__(self, upstream: tuple[str, int], latency: float = 0.0, return_latency: float | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.upstream, self.listen = upstream, listen
        self._latencies = (latency, return_latency)
        self._process: subprocess.Popen[str] | None = None
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; only after ``start``."""
        if self._address is None:
            raise RuntimeError("the proxy is not started")
        return self._address

    def start(self, timeout: float = 30.0) -> tuple[str, int]:
        """Start the process and wait until it listens; returns the bound address."""
        latency, return_latency = self._latencies
        command = [sys.executable, "-m", "regions.wan_proxy", _join(self.upstream), "--listen", _join(self.listen),
                   "--latency", str(latency)]
        if return_latency is not None:
            command += ["--return-latency", str(return_latency)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        host, port = self._reply(timeout).split()
        self._address = (host, int(port))
        return self._address

    def set_latency(self, latency: float, return_latency: float | None = None) -> None:
        """New one-way delays for the chunks read from now on (returns once the process applied them)."""
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the proxy is not started")
        self._process.stdin.write(f"{latency} {'' if return_latency is None else return_latency}\n")
        self._reply(10.0)

    def stop(self) -> None:
        """Stop the process and with it every connection (no-op when not started)."""
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._process = self._address = None

    def _reply(self, timeout: float) -> str:
        """The process's next line of output (it answers each request with one)."""
        assert self._process is not None and self._process.stdout is not None
        with selectors.DefaultSelector() as waiting:  # not select(): a busy caller's descriptors pass 1024
            waiting.register(self._process.stdout, selectors.EVENT_READ)
            line = self._process.stdout.readline() if waiting.select(timeout) else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the WAN proxy to {_join(self.upstream)} did not answer within {timeout} s")
        return line.strip()

    def __enter__(self) -> WanProxyProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _join(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def _serve_until_stdin_closes(proxy: WanProxy) -> None:
    """Run ``proxy``, print its address, then apply each ``LATENCY [RETURN_LATENCY]`` line read
    from standard input (answering ``ok``) until it closes."""
    host, port = await proxy.start()
    print(host, port, flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            latency, *rest = line.split()
            proxy.latency, proxy.return_latency = float(latency), float(rest[0]) if rest else None
            print("ok", flush=True)
    finally:
        await proxy.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m regions.wan_proxy UPSTREAM``: the proxy as a process (see :class:`WanProxyProcess`)."""
    parser = argparse.ArgumentParser(prog="python -m regions.wan_proxy", description=main.__doc__)
    parser.add_argument("upstream", help="HOST:PORT to forward to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="one-way delay, seconds")
    parser.add_argument("--return-latency", type=float, default=None,
                        help="delay upstream to client, seconds (default: --latency)")
    args = parser.parse_args(argv)
    proxy = WanProxy(_split(args.upstream), args.latency, args.return_latency, _split(args.listen))
    asyncio.run(_serve_until_stdin_closes(proxy))


if __name__ == "__main__":
    main()
