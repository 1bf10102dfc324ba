"""The dummy engine served from a thread of the test process, as an `endpoint`: a test
sees every request it received (path, query, Authorization header, body), can refuse
requests (a check of credentials) and can change its injected faults between runs."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from aiohttp import web

from cosmopedia.generation.dummy.faults import Faults
from cosmopedia.generation.dummy.server import DummyServer


@dataclass
class Received:
    method: str
    path: str
    query: list[tuple[str, str]]
    authorization: str | None
    body: bytes


class ThreadedDummy:
    """`with ThreadedDummy(check) as dummy:` serves at `dummy.url` until the block ends.

    `check(request) -> str | None`: a reason to answer 401, or None to serve the request.
    """

    def __init__(self, check=None, latency_per_token: float = 0.0, faults: Faults | None = None):
        self.server = DummyServer("cosmopedia/dummy", latency_per_token, 128, faults)
        self.check = check
        self.received: list[Received] = []
        self.refused: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> dict:
        return self.server.stats

    def set_faults(self, faults: Faults) -> None:
        self.server.faults = faults

    async def _middleware(self, request: web.Request, handler):
        body = await request.read()  # kept by aiohttp: the handler reads it again
        self.received.append(
            Received(
                request.method,
                request.path,
                list(request.query.items()),
                request.headers.get("Authorization"),
                body,
            )
        )
        reason = self.check(request) if self.check is not None else None
        if reason is not None:
            self.refused.append((request.path, reason))
            return web.json_response({"error": reason}, status=401)
        return await handler(request)

    async def _start(self) -> None:
        app = self.server.app()

        @web.middleware
        async def middleware(request, handler):
            return await self._middleware(request, handler)

        app.middlewares.append(middleware)  # before the runner freezes the app
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> ThreadedDummy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
