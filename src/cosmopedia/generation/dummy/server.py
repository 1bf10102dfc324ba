"""The dummy engine's HTTP server (aiohttp): a stand-in LLM server for the demo and the
tests (no GPU, no model), run as `cosmopedia serve-dummy`.

It simulates an engine: a capacity of concurrent sequences (429 `overloaded` above it, as
TGI), a batch of sequences generating at once (the others queue), a time per generated
token, and injected faults (`faults.py`). It speaks TGI's routes (`/generate`, `/`,
`/info`, `/health`) and the OpenAI-compatible ones of vLLM and SGLang (`/v1/completions`,
`/v1/chat/completions`, `/v1/models`) (`protocol.py`); the text is `text.py`'s.
`/stats` counts requests, and `--record-requests FILE` appends each request as it
arrived (path and JSON body, one line each), so tests can see what was actually sent.

`on_running` is a hook for measurements: it is called with the number of sequences
generating whenever that number changes (bench/saturation_meter.py integrates it).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

from aiohttp import web

import cosmopedia
from cosmopedia.generation.dummy import protocol
from cosmopedia.generation.dummy.faults import CRASH_EXIT_CODE, MAX_HANG_S, Faults
from cosmopedia.generation.dummy.protocol import (
    MAX_INPUT_TOKENS,
    MAX_TOTAL_TOKENS,
    RequestError,
)
from cosmopedia.generation.dummy.text import count_tokens, generate_text

log = logging.getLogger(__name__)

OVERLOADED = RequestError(429, "overloaded", "Model is overloaded")
UNAVAILABLE = RequestError(503, "unavailable", "Service unavailable")


class DummyServer:
    """The HTTP server.

    `max_concurrent` requests are admitted (429 `overloaded` above, as TGI's
    --max-concurrent-requests); `max_batch` of them (default: all) generate at once, the
    others wait in a queue, as in TGI's batcher or vLLM's scheduler. `serve_info=False`
    mimics vLLM/SGLang, which have no /info route.
    """

    def __init__(
        self,
        model_id: str,
        latency_per_token: float,
        max_concurrent: int,
        faults: Faults | None = None,
        serve_info: bool = True,
        info_extra: dict | None = None,
        max_batch: int | None = None,
        record_requests: str | None = None,
    ):
        self.model_id = model_id
        self.record_requests = record_requests
        self.latency_per_token = latency_per_token
        self.max_concurrent = max_concurrent
        self.max_batch = max_batch or max_concurrent
        self.faults = faults or Faults()
        self.serve_info = serve_info
        self.info_extra = info_extra or {}
        self.in_flight = 0  # admitted: queued or generating
        self.running = 0  # generating: the batch
        self.on_running: Callable[[int], None] | None = None
        self._batch = asyncio.Semaphore(self.max_batch)
        self._seen: collections.Counter[str] = collections.Counter()
        # Request counters, served at GET /stats so tests can see what was actually sent.
        self.stats = {
            "requests": 0,
            "ok": 0,
            "overloaded": 0,
            "validation": 0,
            "tokens": 0,
            "repeats": 0,
            "disconnected": 0,
            "peak_in_flight": 0,
            "injected": {"overloaded": 0, "unavailable": 0, "reset": 0, "hang": 0},
            "routes": {},
        }

    def app(self, extra_routes: Sequence[web.RouteDef] = ()) -> web.Application:
        app = web.Application(client_max_size=16 * 2**20)
        routes = [
            web.get("/health", self.health),
            web.get("/stats", self.get_stats),
            web.get("/v1/models", self.models),
            web.post("/generate", self.generate),
            web.post("/", self.compat_generate),
            web.post("/v1/completions", self.completions),
            web.post("/v1/chat/completions", self.chat_completions),
            *extra_routes,
        ]
        if self.serve_info:
            routes.append(web.get("/info", self.info))
        app.add_routes(routes)
        return app

    def _record(self, path: str, raw: bytes) -> None:
        """Append the request to `record_requests`: {"path", "body"} (the body parsed when
        it is JSON, else its text)."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        line = json.dumps({"path": path, "body": body}, ensure_ascii=False)
        with open(self.record_requests, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    async def _generate(self, seconds: float) -> None:
        """Hold a batch slot for `seconds` (waiting for one first)."""
        async with self._batch:
            self._set_running(self.running + 1)
            try:
                if seconds > 0:
                    await asyncio.sleep(seconds)
            finally:
                self._set_running(self.running - 1)

    def _set_running(self, running: int) -> None:
        self.running = running
        if self.on_running is not None:
            self.on_running(running)

    # --- plain routes ----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def info(self, request: web.Request) -> web.Response:
        info = {
            "model_id": self.model_id,
            "model_sha": None,
            "model_dtype": None,
            "max_concurrent_requests": self.max_concurrent,
            "max_input_tokens": MAX_INPUT_TOKENS,
            "max_total_tokens": MAX_TOTAL_TOKENS,
            "version": cosmopedia.__version__,
            "sha": None,
            "docker_label": None,
            "engine": "dummy",
            "latency_per_token_s": self.latency_per_token,
        }
        if self.max_batch != self.max_concurrent:
            info["max_batch_size"] = self.max_batch
        if self.faults.active:
            info["faults"] = self.faults.as_dict()
        return web.json_response({**info, **self.info_extra})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.stats,
                "in_flight": self.in_flight,
                "running": self.running,
                "admission_limit": self.max_concurrent,
                "batch_capacity": self.max_batch,
                "server": self.info_extra,
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.model_id, "object": "model", "created": 0, "owned_by": "cosmopedia"}
        card["max_model_len"] = MAX_TOTAL_TOKENS
        return web.json_response({"object": "list", "data": [card]})

    # --- generation routes -----------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.Response:
        return await self._handle(request, "generate")

    async def compat_generate(self, request: web.Request) -> web.Response:
        return await self._handle(request, "compat")

    async def completions(self, request: web.Request) -> web.Response:
        return await self._handle(request, "completions")

    async def chat_completions(self, request: web.Request) -> web.Response:
        return await self._handle(request, "chat")

    async def _handle(self, request: web.Request, api: str) -> web.Response:
        openai = api in ("completions", "chat")
        # Counted once its body is in: a client killed mid-send made no request.
        raw = await request.read()
        if self.record_requests is not None:
            self._record(request.path, raw)
        self.stats["requests"] += 1
        self.stats["routes"][api] = self.stats["routes"].get(api, 0) + 1
        request_hash = hashlib.sha256(api.encode() + b"\0" + raw).hexdigest()
        occurrence = self._seen[request_hash]
        self._seen[request_hash] += 1
        self.stats["repeats"] += occurrence > 0
        if self.faults.crash_after and self.stats["requests"] >= self.faults.crash_after:
            print(
                f"dummy engine: simulated crash at request {self.stats['requests']}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(CRASH_EXIT_CODE)
        # TGI rejects at once, rather than queueing, above its concurrency limit.
        if self.in_flight >= self.max_concurrent:
            self.stats["overloaded"] += 1
            return _error(OVERLOADED, openai)
        fault = self.faults.draw(request_hash, occurrence)
        if fault is not None:
            self.stats["injected"][fault] += 1
        if fault == "overloaded":
            return _error(OVERLOADED, openai)
        if fault == "unavailable":
            return _error(UNAVAILABLE, openai)
        if fault == "reset":
            _reset_connection(request)
            return web.Response(status=500)  # never delivered: the connection is gone

        self.in_flight += 1
        self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"], self.in_flight)
        try:
            if fault == "hang":
                # A stuck sequence: it answers nothing until the client gives up (the
                # handler is then cancelled).
                await self._generate(MAX_HANG_S)
                return web.Response(status=504)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if api == "chat":
                inputs, params, max_new_tokens, seed = protocol.parse_chat(body, self.model_id)
            elif api == "completions":
                parsed = protocol.parse_completions(body, self.model_id)
                inputs, params, max_new_tokens, seed = parsed
            else:
                inputs, params, max_new_tokens, seed = protocol.parse_request(body)
            text, n_tokens, finish_reason = generate_text(inputs, seed, max_new_tokens)
            await self._generate(self.latency_per_token * n_tokens)
        except RequestError as exc:
            self.stats["validation"] += exc.status in (400, 422)
            return _error(exc, openai)
        except asyncio.CancelledError:
            self.stats["disconnected"] += 1  # the client left (timeout, killed job)
            raise
        finally:
            self.in_flight -= 1

        self.stats["ok"] += 1
        self.stats["tokens"] += n_tokens
        prompt_tokens = count_tokens(inputs)
        if openai:
            answer = protocol.openai_answer(
                api, self.model_id, text, n_tokens, prompt_tokens, finish_reason
            )
            return web.json_response(answer)
        answer = protocol.tgi_answer(inputs, params, seed, text, n_tokens, finish_reason)
        headers = {"x-generated-tokens": str(n_tokens), "x-prompt-tokens": str(prompt_tokens)}
        return web.json_response([answer] if api == "compat" else answer, headers=headers)


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashing proxy or engine would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on, timeout 0: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _error(exc: RequestError, openai: bool = False) -> web.Response:
    return web.json_response(protocol.error_body(exc, openai), status=exc.status)


# --- command line ------------------------------------------------------------------------


def add_engine_options(parser, prefix: str = "") -> None:
    """Simulation options; `prefix` ("dummy-") keeps them apart from a mimicked engine's."""
    parser.add_argument(
        f"--{prefix}latency-per-token",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds slept per generated token (makes concurrency observable)",
    )
    parser.add_argument(f"--{prefix}fault-seed", type=int, default=0, metavar="N")
    for name, what in (
        ("429", "answer 429 overloaded"),
        ("503", "answer 503 unavailable"),
        ("reset", "reset the connection"),
        ("hang", "never answer (until the client leaves)"),
    ):
        parser.add_argument(
            f"--{prefix}fault-{name}",
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"share of requests to {what}",
        )
    parser.add_argument(
        f"--{prefix}crash-after",
        type=int,
        default=0,
        metavar="N",
        help=f"exit with code {CRASH_EXIT_CODE} when request N arrives (0: never)",
    )
    parser.add_argument(
        f"--{prefix}startup-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds before the port opens (loading the model)",
    )
    parser.add_argument(
        f"--{prefix}startup-fatal",
        default=None,
        metavar="LINE",
        help="print LINE at start-up, then hang without ever serving (a fatal start error)",
    )
    parser.add_argument(
        f"--{prefix}record-requests",
        default=None,
        metavar="FILE",
        help="append every request received to FILE: one JSON line {path, body} each",
    )


def engine_options(args, prefix: str = "") -> dict:
    """The simulation options parsed by `add_engine_options`, without the prefix."""
    attr = prefix.replace("-", "_")
    get = lambda name: getattr(args, f"{attr}{name}")  # noqa: E731
    faults = Faults(
        seed=get("fault_seed"),
        rate_429=get("fault_429"),
        rate_503=get("fault_503"),
        rate_reset=get("fault_reset"),
        rate_hang=get("fault_hang"),
        crash_after=get("crash_after"),
    )
    return {
        "latency_per_token": get("latency_per_token"),
        "faults": faults,
        "startup_delay": get("startup_delay"),
        "startup_fatal": get("startup_fatal"),
        "record_requests": get("record_requests"),
    }


def add_arguments(name: str, parser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-id", default="cosmopedia/dummy")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=128,
        metavar="N",
        help="requests in flight above which the server answers 429 overloaded",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=0,
        metavar="N",
        help="sequences generated at once, the other admitted requests queue (0: all)",
    )
    add_engine_options(parser)


def serve(
    server: DummyServer,
    host: str,
    port: int,
    startup_delay: float = 0.0,
    startup_fatal: str | None = None,
    extra_routes: Sequence[web.RouteDef] = (),
) -> None:
    """Run `server` until SIGTERM/SIGINT (after the simulated start-up)."""
    if startup_fatal is not None:
        print(startup_fatal, flush=True)
        time.sleep(MAX_HANG_S)
        return
    if startup_delay > 0:
        time.sleep(startup_delay)
    log.info("dummy engine serving %s on http://%s:%d", server.model_id, host, port)
    app = server.app(extra_routes)

    async def log_stats(app: web.Application) -> None:
        # What it was sent, in its log (a test counts the requests of a stopped engine).
        log.info("dummy engine stats: %s", json.dumps(server.stats, sort_keys=True))

    app.on_cleanup.append(log_stats)
    # run_app stops cleanly on SIGTERM/SIGINT, as a real engine should under a sidecar.
    # Handlers are cancelled when their client disconnects (a timeout, a killed job), so a
    # hung or abandoned request does not hold a sequence slot forever.
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )


def server_from_args(args) -> tuple[DummyServer, dict]:
    """The server `serve-dummy` runs, from the options of `add_arguments`, and the
    simulation options (`engine_options`)."""
    from cosmopedia.errors import CliError

    options = engine_options(args)
    if options["latency_per_token"] < 0:
        raise CliError("--latency-per-token must be >= 0")
    if args.max_concurrent < 1 or args.max_batch < 0:
        raise CliError("--max-concurrent must be >= 1 and --max-batch >= 0")
    server = DummyServer(
        args.model_id,
        options["latency_per_token"],
        args.max_concurrent,
        options["faults"],
        max_batch=args.max_batch or None,
        record_requests=options["record_requests"],
    )
    return server, options


def main(args) -> int:
    server, options = server_from_args(args)
    serve(server, args.host, args.port, options["startup_delay"], options["startup_fatal"])
    return 0
