"""Serve an aiohttp application on ``settings.web_bind:settings.web_port`` (loopback by default).

>>> import asyncio
>>> from aiohttp import web
>>> from core.settings import Settings
>>> async def demo():
...     server = ApiServer(Settings(web_port=0), web.Application())
...     await server.start()
...     bound = server.port > 0
...     await server.stop()
...     return bound
>>> asyncio.run(demo())
True
"""

from __future__ import annotations

from aiohttp import web

from core.settings import Settings


class ApiServer:
    """Start and stop an :class:`aiohttp.web.AppRunner` with one TCP site.

    ``await start()`` binds ``settings.web_bind:settings.web_port`` (port 0 picks a free one,
    then :attr:`port` tells which) and runs the application's startup; ``await stop()`` closes
    the listener, lets requests in flight finish (up to ``shutdown_timeout`` seconds) and runs
    its cleanup (for ``api.app.make_api``: the last access-log flush)."""

    def __init__(self, settings: Settings, app: web.Application, shutdown_timeout: float = 10.0) -> None:
        self.host, self.requested_port = settings.web_bind, settings.web_port
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.requested_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"
