"""The dummy engine with a saturation meter: the engine that bench/saturation.py measures.

    .venv/bin/python bench/saturation_meter.py --port P [serve-dummy options]

Runs `cosmopedia serve-dummy` with a meter on its batch (the server's `on_running` hook)
and one more route, GET /saturation: `busy_seq_s`, the integral of the sequences
generating over `clock_s` (seconds since start-up); `first_request_s` / `last_done_s`
bound the busy period; `last_full_s` / `busy_at_last_full_s` mark when every batch slot
was last busy (what follows is the drain at the end of a shard); `batch_capacity`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from aiohttp import web

from cosmopedia.generation.dummy import server as dummy_server


class SaturationMeter:
    """The time integral of the number of sequences generating (`update` on each change)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.running = 0
        self.started = time.monotonic()
        self.last_change = self.started
        self.busy_seq_s = 0.0
        self.first_request: float | None = None
        self.last_done: float | None = None
        self.last_full: float | None = None
        self.busy_at_last_full = 0.0

    def _tick(self) -> float:
        now = time.monotonic()
        self.busy_seq_s += self.running * (now - self.last_change)
        self.last_change = now
        return now

    def update(self, running: int) -> None:
        now = self._tick()
        if running > self.running and self.first_request is None:
            self.first_request = now
        if running < self.running:
            self.last_done = now
        self.running = running
        if running == self.capacity:
            self.last_full, self.busy_at_last_full = now, self.busy_seq_s

    def snapshot(self) -> dict:
        now = self._tick()

        def clock(t: float | None) -> float | None:
            return None if t is None else t - self.started

        return {
            "batch_capacity": self.capacity,
            "busy_seq_s": self.busy_seq_s,
            "clock_s": now - self.started,
            "first_request_s": clock(self.first_request),
            "last_done_s": clock(self.last_done),
            "last_full_s": clock(self.last_full),
            "busy_at_last_full_s": self.busy_at_last_full,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dummy_server.add_arguments("serve-dummy", parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server, options = dummy_server.server_from_args(args)
    meter = SaturationMeter(server.max_batch)
    server.on_running = meter.update

    async def saturation(request: web.Request) -> web.Response:
        return web.json_response(meter.snapshot())

    dummy_server.serve(
        server,
        args.host,
        args.port,
        options["startup_delay"],
        options["startup_fatal"],
        extra_routes=[web.get("/saturation", saturation)],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
