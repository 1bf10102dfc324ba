"""The request stream: one bounded-concurrency stream over the whole shard.

No chunk barriers: as soon as a request finishes, the next row goes to the least-loaded
server (requests in flight / capacity), so every engine holds as many sequences as it
admits until the shard runs out. The concurrency is min(generation.concurrency, sum of
the servers' capacities). Every finished row goes to the checkpoint at once; a server
that dies aborts the stream (`EngineDied`), so that the job is retried rather than
failing every remaining row.

The drain is the tail of the stream in which fewer requests than the concurrency are in
flight: it starts when the first worker finds no row left (at once when the shard has
fewer pending rows than the concurrency). `drain_started` records it for the shard's
GPU-hour accounting (cosmopedia.accounting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from cosmopedia import settings
from cosmopedia.generation import probes, requests, routes
from cosmopedia.generation.checkpoint import Checkpoint
from cosmopedia.generation.engines import Engine, Server, Started
from cosmopedia.generation.requests import Request
from cosmopedia.redact import EndpointAccess

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
WATCH_EVERY_S = 0.5


class EngineDied(Exception):
    """An engine server exited while the job still needed it."""


@dataclass
class Instance:
    """One engine server as the stream sees it: its route and its load."""

    server: Server
    route: routes.Route | None
    in_flight: int = 0
    sent: int = 0

    @property
    def index(self) -> int:
        return self.server.index

    @property
    def capacity(self) -> int:
        return self.server.capacity


class Stream:
    """Sends the pending requests with at most `concurrency` in flight and records each row."""

    def __init__(
        self,
        generation: settings.Generation,
        instances: list[Instance],
        concurrency: int,
        checkpoint: Checkpoint | None,
        total: int,
        reused: int,
    ):
        self.generation = generation
        self.instances = instances
        self.concurrency = concurrency
        self.checkpoint = checkpoint
        self.total = total
        self.reused = reused
        self.results: dict[str, dict] = {}
        self.remaining = 0
        self.all_done = asyncio.Event()
        self.failed = 0
        self.tokens = 0
        self.retries = 0
        self.started = time.monotonic()
        # The drain: when fewer requests than the concurrency remained in flight.
        self.drain_started: float | None = None
        self._sync: asyncio.Future | None = None

    async def run(self, pending: list[Request]) -> None:
        self.remaining = len(pending)
        if not pending:
            self.all_done.set()
        queue = iter(pending)
        workers = min(self.concurrency, len(pending))
        if workers < self.concurrency:  # never full: the whole stream is a drain
            self._drain_starts()
        tasks = [asyncio.create_task(self._worker(queue)) for _ in range(workers)]
        tasks.append(asyncio.create_task(self._watch()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._sync is not None:
                await asyncio.gather(self._sync, return_exceptions=True)
            for instance in self.instances:
                await instance.route.close()

    async def _worker(self, queue) -> None:
        # Workers share one iterator: each takes the next row as soon as it is free.
        for request in queue:
            record = await self._generate(request)
            self.results[request.id] = record
            due = self.checkpoint.append(record, sync=False)
            if due and (self._sync is None or self._sync.done()):
                self._sync = asyncio.ensure_future(
                    asyncio.to_thread(self.checkpoint.sync_in_background)
                )
            self.failed += record["error"] is not None
            self.tokens += record["text_token_length"] or 0
            self.remaining -= 1
            if self.remaining == 0:
                self.all_done.set()
        self._drain_starts()  # no row left for this worker: one fewer in flight from now

    def _drain_starts(self) -> None:
        if self.drain_started is None:
            self.drain_started = time.monotonic()

    async def _watch(self) -> None:
        """Abort as soon as an engine dies; log progress every few seconds."""
        next_log = time.monotonic() + PROGRESS_EVERY_S
        while not self.all_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_done.wait(), WATCH_EVERY_S)
            self._check_engines()
            if time.monotonic() >= next_log:
                self.log_progress()
                next_log += PROGRESS_EVERY_S

    def _check_engines(self) -> None:
        for instance in self.instances:
            why = instance.server.exited()
            if why is not None:
                raise EngineDied(f"engine instance {instance.index} {why}")

    def log_progress(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        log.info(
            "%d/%d rows (%d from checkpoint), %.1f rows/s, %.0f tokens/s, %d failed, "
            "%d retries, in flight %s",
            self.reused + len(self.results),
            self.total,
            self.reused,
            len(self.results) / elapsed,
            self.tokens / elapsed,
            self.failed,
            self.retries,
            "/".join(str(i.in_flight) for i in self.instances),
        )

    def _pick(self) -> Instance:
        """The least-loaded instance (in flight / capacity), then the least used so far."""
        return min(self.instances, key=lambda i: (i.in_flight / i.capacity, i.sent, i.index))

    async def _generate(self, request: Request) -> dict:
        g = self.generation
        attempt = 0
        while True:
            attempt += 1
            instance = self._pick()
            instance.in_flight += 1
            instance.sent += 1
            try:
                output = await instance.route.generate(request.prompt, request.seed)
            except Exception as exc:
                failure = requests.classify(exc)
                if failure is None:
                    raise
                # A dead sidecar fails every row: abort so that the job is retried instead.
                self._check_engines()
                cause, transient = failure
                if not transient or attempt > g.max_retries:
                    attempts = request.prior_attempts + attempt
                    return requests.failure_record(request, attempts, exc, cause, transient)
            else:
                return requests.record(
                    request,
                    request.prior_attempts + attempt,
                    text=output.text,
                    tokens=output.tokens,
                    finish_reason=output.finish_reason,
                )
            finally:
                instance.in_flight -= 1
            self.retries += 1
            await asyncio.sleep(
                probes.backoff_s(request.id, attempt, g.backoff_base_s, g.backoff_max_s)
            )


async def stream_shard(
    engine: Engine,
    started: Started,
    checkpoint: Checkpoint,
    chat_server: bool,
    pending: list[Request],
    total: int,
    reused: int,
    access: EndpointAccess | None = None,
) -> tuple[Stream, int]:
    """Send `pending` through the started servers: (the finished stream, its concurrency).
    `access`: an endpoint's query parameters and credentials, sent with every request."""
    generation = engine.generation
    capacities = [server.capacity for server in started.servers]
    concurrency = min(generation.concurrency, sum(capacities))
    http = routes.plain_http_client(generation.concurrency, engine.external, access)
    async with http:
        instances = [
            Instance(server, engine.make_route(chat_server, server.url, http))
            for server in started.servers
        ]
        log.info(
            "%d pending rows, %d engine instance(s) of capacity %s, concurrency %d",
            len(pending),
            len(instances),
            capacities,
            concurrency,
        )
        stream = Stream(generation, instances, concurrency, checkpoint, total, reused)
        await stream.run(pending)
    return stream, concurrency
