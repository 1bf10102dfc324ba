"""Prompts shard -> generations shard, through engine servers (sidecars or an endpoint).

The job starts `instances` engine servers (TGI, vLLM, SGLang or the dummy), each on its own
GPU subset, or uses a running endpoint. One bounded-concurrency stream of requests covers
the whole shard (no chunk barriers): as soon as a request finishes, the next row goes to
the least-loaded instance, so every engine holds as many sequences as it admits until the
shard runs out. The concurrency is min(generation.concurrency, sum of the instances'
capacities), a capacity being the engine's `max_concurrent_requests` from /info (TGI, the
dummy) or the value the job passed to it (vLLM `--max-num-seqs`, SGLang
`--max-running-requests`).

Each row gets a seed derived from (dataset version, row id); failures are retried by error
class with seeded, jittered exponential backoff. Every finished row is written to a
checkpoint beside the output at once (one write per row, fsync every `checkpoint_every`),
keyed by a hash of everything that determines its request, so a killed job resumes
without re-sending finished rows: only the requests in flight are lost. The output is
written atomically, then the checkpoint is deleted.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import huggingface_hub
import polars as pl
from huggingface_hub import errors
from huggingface_hub.utils import build_hf_headers

from cosmopedia import io
from cosmopedia import settings as step_settings
from cosmopedia.engines import api as engine_api
from cosmopedia.engines import chat_template, launch
from cosmopedia.engines.sidecar import (
    Sidecar,
    SidecarError,
    openai_smoke_request,
    running,
    sigterm_raises,
    tgi_smoke_request,
)
from cosmopedia.errors import CliError
from cosmopedia.seeding import SCHEME, derive_seed, rng_for

log = logging.getLogger(__name__)

ENGINES = ("dummy", "tgi", "vllm", "sglang", "endpoint")
APIS = ("tgi", "openai")
SETTINGS_KEYS = (
    "dataset_version",
    "engine",
    "api",
    "endpoint_url",
    "model",
    "revision",
    "chat_template",
    "instances",
    "gpus_per_instance",
    "concurrency",
    "request_timeout_s",
    "max_retries",
    "backoff_base_s",
    "backoff_max_s",
    "startup_timeout_s",
    "checkpoint_every",
    "server",
    "sampling",
    "dummy",
)
SERVER_KEYS = (
    "max_concurrent_requests",
    "max_input_tokens",
    "max_total_tokens",
    "launcher",
    "image",
    "image_digest",
    "mounts",
    "launcher_args",
    "program",
    "extra_args",
    "env",
    "fatal_log_patterns",
    "stop_grace_s",
)
SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")
DUMMY_KEYS = ("latency_per_token_s", "max_concurrent", "max_batch", "faults")
FAULT_KEYS = ("seed", "rate_429", "rate_503", "rate_reset", "rate_hang", "crash_after")
INPUT_COLUMNS = ("id", "source", "family", "prompt", "seed_data", "format", "audience")
RESULT_SCHEMA = {
    "text": pl.String,
    "text_token_length": pl.Int64,
    "finish_reason": pl.String,
    "seed": pl.Int64,
    "attempts": pl.Int64,
    "error": pl.String,
}
PROGRESS_EVERY_S = 5.0
WATCH_EVERY_S = 0.5
ERROR_MESSAGE_CHARS = 500
# Connections beyond the request concurrency (a retry may open one while another closes).
SPARE_CONNECTIONS = 8


class EngineDied(Exception):
    """An engine server exited while the job still needed it."""


# --- settings ------------------------------------------------------------------------------


def _require_keys(where: str, value, keys: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise CliError(f"{where} must be a JSON object")
    missing = [k for k in keys if k not in value]
    unknown = sorted(set(value) - set(keys))
    if missing:
        raise CliError(f"{where} is missing: {', '.join(missing)}")
    if unknown:
        raise CliError(f"{where} has unknown keys: {', '.join(unknown)}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def validate_settings(settings) -> dict:
    """Check that `settings` has exactly the expected keys and sensible values."""
    _require_keys("--settings", settings, SETTINGS_KEYS)
    _require_keys("--settings sampling", settings["sampling"], SAMPLING_KEYS)
    _require_keys("--settings dummy", settings["dummy"], DUMMY_KEYS)
    _require_keys("--settings dummy.faults", settings["dummy"]["faults"], FAULT_KEYS)
    _require_keys("--settings server", settings["server"], SERVER_KEYS)
    engine = settings["engine"]
    if engine not in ENGINES:
        raise CliError(f"--settings engine must be one of {ENGINES}, not {engine!r}")
    if settings["api"] is not None and settings["api"] not in APIS:
        raise CliError(f"--settings api must be null or one of {APIS}")
    url = settings["endpoint_url"]
    if engine == "endpoint" and not (
        isinstance(url, str) and url.startswith(("http://", "https://"))
    ):
        raise CliError(
            f"--settings endpoint_url must be an http(s) URL for engine endpoint: "
            f"{launch.redact([str(url)])[0]!r}"
        )
    for key in ("dataset_version", "model", "revision"):
        if not isinstance(settings[key], str) or not settings[key]:
            raise CliError(f"--settings {key} must be a non-empty string")
    if settings["chat_template"] is not None and not isinstance(settings["chat_template"], str):
        raise CliError("--settings chat_template must be null, 'server' or a file path")
    minimums = {
        "concurrency": 1,
        "max_retries": 0,
        "checkpoint_every": 1,
        "instances": 1,
        "gpus_per_instance": 1,
    }
    for key, minimum in minimums.items():
        if not _is_int(settings[key]) or settings[key] < minimum:
            raise CliError(f"--settings {key} must be an integer >= {minimum}")
    if engine == "endpoint" and settings["instances"] != 1:
        raise CliError("--settings instances must be 1 for engine endpoint (one URL)")
    for key in ("request_timeout_s", "startup_timeout_s", "backoff_base_s", "backoff_max_s"):
        value = settings[key]
        if not _is_number(value) or value < 0:
            raise CliError(f"--settings {key} must be a number >= 0")
        if key.endswith("timeout_s") and value == 0:
            raise CliError(f"--settings {key} must be > 0")
    server = settings["server"]
    for key in ("max_concurrent_requests", "max_input_tokens", "max_total_tokens"):
        if not _is_int(server[key]) or server[key] < 1:
            raise CliError(f"--settings server.{key} must be an integer >= 1")
    if server["launcher"] not in launch.LAUNCHERS:
        raise CliError(f"--settings server.launcher must be one of {launch.LAUNCHERS}")
    for key in ("mounts", "launcher_args", "extra_args"):
        if not _is_str_list(server[key]):
            raise CliError(f"--settings server.{key} must be a list of strings")
    program = server["program"]
    if program is not None and not (_is_str_list(program) and program):
        raise CliError("--settings server.program must be null or a non-empty list of strings")
    patterns = server["fatal_log_patterns"]
    if patterns is not None and not _is_str_list(patterns):
        raise CliError("--settings server.fatal_log_patterns must be null or a list of regexes")
    if not isinstance(server["env"], dict):
        raise CliError("--settings server.env must be an object")
    max_batch = settings["dummy"]["max_batch"]
    if max_batch is not None and (not _is_int(max_batch) or max_batch < 1):
        raise CliError("--settings dummy.max_batch must be null or an integer >= 1")
    if not _is_number(server["stop_grace_s"]) or server["stop_grace_s"] < 0:
        raise CliError("--settings server.stop_grace_s must be a number >= 0")
    try:
        if engine in launch.SIDECAR_ENGINES:
            launch.check_server_settings(settings)
    except launch.LaunchError as exc:
        raise CliError(f"--settings: {exc}") from exc
    return settings


def api_of(settings: dict) -> str:
    return settings["api"] or launch.DEFAULT_API[settings["engine"]]


# --- requests and their keys ---------------------------------------------------------------


def request_key(
    prompt: str,
    seed: int,
    model: str,
    revision: str,
    sampling: dict,
    context: dict | None = None,
) -> str:
    """Identifies a request: a checkpointed row is reused only if its key still matches.

    `context` (the route and chat template, when not TGI's /generate with raw prompts)
    joins the key only when set, so keys of plain requests stay the same.
    """
    fields = {
        "prompt": prompt,
        "seed": seed,
        "model": model,
        "revision": revision,
        "sampling": sampling,
    }
    if context:
        fields["context"] = context
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def backoff_s(row_id: str, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter from a seeded RNG (reruns wait the same)."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rng_for("backoff", row_id, attempt).random())


def _by_status(status: int) -> tuple[str, bool]:
    if status == 429:
        return "overloaded", True
    if status in (400, 422):
        return "validation", False
    if status == 503:
        return "unavailable", True
    return f"http_{status}", status >= 500


def classify(exc: Exception) -> tuple[str, bool] | None:
    """(cause, transient) for a failed request, or None if it is not a request failure."""
    if isinstance(exc, errors.ValidationError):
        return "validation", False
    if isinstance(exc, errors.OverloadedError):
        return "overloaded", True
    # TGI reports CUDA OOM of a request as a generation error: another batch may fit.
    if isinstance(exc, errors.GenerationError):
        return "generation", True
    if isinstance(exc, errors.IncompleteGenerationError):
        return "incomplete_generation", True
    if isinstance(exc, errors.InferenceTimeoutError | httpx2.TimeoutException):
        return "timeout", True
    if isinstance(exc, httpx2.TransportError):
        return "connection", True
    if isinstance(exc, engine_api.EngineHTTPError):
        return _by_status(exc.status)
    # Other HTTP errors: the status sits on the error or on the HTTP error it wraps.
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return _by_status(status)
    return None


class Checkpoint:
    """Append-only JSON lines of finished rows, beside (never inside) the declared output.

    Each record is one write(2) on an O_APPEND descriptor, so a finished row survives a
    SIGKILL of the job at any point (the kernel has it); fsync every `flush_every` rows
    also keeps it through a node crash. The stream runs that fsync in a thread: on a
    shared file system it can take long enough to stall every request of the job.
    """

    def __init__(self, path: str | os.PathLike, flush_every: int):
        self.path = Path(path)
        self.flush_every = flush_every
        self.unflushed = 0
        self.fd: int | None = None

    def load(self, keys: dict[str, str]) -> dict[str, dict]:
        """Reusable records by row id: key still matches, and not a transient failure.

        The file is then rewritten with just those records, which drops stale lines and a
        line truncated by a kill, so that appending starts on a clean line.
        """
        records: dict[str, dict] = {}
        if self.path.exists():
            # A kill may cut a line inside a multi-byte character: read it as garbage.
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if (
                        isinstance(record, dict)
                        and isinstance(record.get("id"), str)
                        and keys.get(record["id"]) == record.get("key")
                        and all(name in record for name in RESULT_SCHEMA)
                        and not record.get("transient")
                    ):
                        records[record["id"]] = record
        with io.atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in records.values():
                f.write(_json_line(record))
        return records

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict, sync: bool = True) -> bool:
        """Write `record`; fsync if due and `sync`. True if an fsync is due (not `sync`)."""
        data = _json_line(record).encode("utf-8")
        while data:  # a regular file takes it in one write; loop for the general case
            data = data[os.write(self.fd, data) :]
        self.unflushed += 1
        due = self.unflushed >= self.flush_every
        if due and sync:
            self.flush()
            return False
        return due

    def flush(self) -> None:
        os.fsync(self.fd)
        self.unflushed = 0

    def sync_in_background(self) -> None:
        """The fsync of `flush`, for a worker thread (the descriptor may close meanwhile)."""
        fd, self.unflushed = self.fd, 0
        with contextlib.suppress(OSError):
            os.fsync(fd)

    def close(self) -> None:
        if self.fd is not None:
            self.flush()
            os.close(self.fd)
            self.fd = None


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Request:
    id: str
    prompt: str  # as sent (the chat template applied, if the client applies it)
    seed: int
    key: str


@dataclass
class Instance:
    """One engine server as the client sees it."""

    index: int
    url: str
    capacity: int
    route: engine_api.Route
    sidecar: Sidecar | None = None
    in_flight: int = 0
    sent: int = 0


# --- the request stream --------------------------------------------------------------------


class Stream:
    """Sends the pending requests with at most `concurrency` in flight and records each row."""

    def __init__(
        self,
        settings: dict,
        instances: list[Instance],
        concurrency: int,
        checkpoint: Checkpoint,
        total: int,
        reused: int,
    ):
        self.settings = settings
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
        self._sync: asyncio.Future | None = None

    async def run(self, pending: list[Request]) -> None:
        self.remaining = len(pending)
        if not pending:
            self.all_done.set()
        queue = iter(pending)
        workers = min(self.concurrency, len(pending))
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
            sidecar = instance.sidecar
            if sidecar is not None and not sidecar.alive():
                raise EngineDied(
                    f"engine instance {instance.index} exited (code "
                    f"{sidecar.process.returncode}); see {sidecar.log_path}"
                )

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
        attempt = 0
        while True:
            attempt += 1
            instance = self._pick()
            instance.in_flight += 1
            instance.sent += 1
            try:
                output = await instance.route.generate(request.prompt, request.seed)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                # A dead sidecar fails every row: abort so that the job is retried instead.
                self._check_engines()
                cause, transient = failure
                if not transient or attempt > self.settings["max_retries"]:
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    return _record(
                        request,
                        attempt,
                        error=f"{cause}: {message[:ERROR_MESSAGE_CHARS]}",
                        transient=transient,
                    )
            else:
                return _record(
                    request,
                    attempt,
                    text=output.text,
                    tokens=output.tokens,
                    finish_reason=output.finish_reason,
                )
            finally:
                instance.in_flight -= 1
            self.retries += 1
            await asyncio.sleep(
                backoff_s(
                    request.id,
                    attempt,
                    self.settings["backoff_base_s"],
                    self.settings["backoff_max_s"],
                )
            )


def _record(
    request: Request,
    attempts: int,
    *,
    text: str | None = None,
    tokens: int | None = None,
    finish_reason: str = "error",
    error: str | None = None,
    transient: bool = False,
) -> dict:
    return {
        "id": request.id,
        "key": request.key,
        "text": text,
        "text_token_length": tokens,
        "finish_reason": finish_reason,
        "seed": request.seed,
        "attempts": attempts,
        "error": error,
        "transient": transient,
    }


def failure_cause(record: dict) -> str | None:
    """Why a row counts as failed in the shard report; the row stays in the output."""
    if record["error"] is not None:
        return record["error"].split(":", 1)[0]
    if record["finish_reason"] == "length":
        return "length"  # cut at max_new_tokens: an unfinished text
    if not (record["text"] or "").strip():
        return "empty_text"
    return None


# --- engines -------------------------------------------------------------------------------


def _http_client(settings: dict) -> httpx2.AsyncClient:
    """A plain httpx client sized for our concurrency.

    huggingface_hub's default async client refuses every request when HF_HUB_OFFLINE=1
    (usual on offline GPU nodes, where the engine loads a cached model), and follows proxy
    settings that must not apply to the job's own loopback servers.
    """
    size = settings["concurrency"] + SPARE_CONNECTIONS
    limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
    return httpx2.AsyncClient(
        limits=limits,
        timeout=None,
        follow_redirects=True,
        trust_env=settings["engine"] == "endpoint",
    )


def _use_plain_http_client(settings: dict) -> None:
    huggingface_hub.set_async_client_factory(lambda: _http_client(settings))


def _probe_endpoint(url: str, timeout_s: float) -> dict | None:
    """Wait until the endpoint's /health answers 200; return its /info (None if absent)."""
    headers = build_hf_headers()  # the token, if any, for protected endpoints
    deadline = time.monotonic() + timeout_s
    shown = launch.redact([url])[0]
    with httpx2.Client(headers=headers, timeout=10.0, follow_redirects=True) as client:
        while True:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise CliError(f"endpoint {shown} was not healthy within {timeout_s:g} s")
            time.sleep(1.0)
        response = client.get(f"{url}/info")
    try:
        return response.json() if response.status_code == 200 else None
    except ValueError:  # not JSON: a server without TGI's /info
        return None


def _capacity(info: dict | None, fallback: int) -> int:
    value = (info or {}).get("max_concurrent_requests")
    return value if _is_int(value) and value >= 1 else fallback


@dataclass
class Engines:
    """What `_start_engines` returns: URLs, capacities, and what provenance records."""

    urls: list[str]
    capacities: list[int]
    sidecars: list[Sidecar | None]
    record: dict
    instances: list[dict]


def _image_in_background(settings: dict, pool: concurrent.futures.Executor):
    def work() -> dict | None:
        try:
            return launch.image_record(settings)
        except OSError as exc:
            log.warning("cannot hash the image: %s", exc)
            return {"name": settings["server"]["image"], "digest": None}

    return pool.submit(work)


def _start_engines(settings: dict, engine_log: str, stack: contextlib.ExitStack) -> Engines:
    """Start the sidecars (or probe the endpoint); the stack stops them."""
    kind = settings["engine"]
    api = api_of(settings)
    server = settings["server"]
    record: dict = {
        "kind": kind,
        "api": api,
        "endpoint_url": launch.redact([settings["endpoint_url"]])[0]
        if settings["endpoint_url"]
        else None,
    }
    if kind == "endpoint":
        base_url = settings["endpoint_url"].rstrip("/")
        Path(engine_log).parent.mkdir(parents=True, exist_ok=True)
        with open(engine_log, "a", encoding="utf-8") as f:
            f.write(f"# endpoint engine at {record['endpoint_url']}: no process started\n")
        info = _probe_endpoint(base_url, settings["startup_timeout_s"])
        record |= {"command": None, "info": info, "image": None}
        capacity = _capacity(info, server["max_concurrent_requests"])
        instances = [{"index": 0, "url": record["endpoint_url"], "gpus": None}]
        return Engines([base_url], [capacity], [None], record, instances)

    template = launch.command_template(settings)
    try:
        plans = launch.plan_instances(settings, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except launch.LaunchError as exc:
        raise CliError(str(exc)) from exc
    stack.callback(launch.cleanup_scratch, plans)
    smoke = openai_smoke_request(settings["model"]) if api == "openai" else tgi_smoke_request
    sidecars = [
        Sidecar(
            template,
            engine_log,
            startup_timeout_s=settings["startup_timeout_s"],
            grace_s=server["stop_grace_s"],
            smoke=smoke,
            values=plan.values,
            env=plan.env,
            prefix=plan.prefix,
            fatal_patterns=launch.fatal_patterns(settings),
        )
        for plan in plans
    ]
    pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1))
    image = _image_in_background(settings, pool)
    try:
        stack.enter_context(running(sidecars, settings["startup_timeout_s"]))
    except SidecarError as exc:
        raise CliError(str(exc)) from exc
    fallback = server["max_concurrent_requests"]
    if kind == "dummy":
        fallback = settings["dummy"]["max_concurrent"]
    capacities = [_capacity(s.info, fallback) for s in sidecars]
    record |= {"command": launch.recorded(template), "info": sidecars[0].info}
    record["image"] = image.result()
    instances = [
        {
            "index": plan.index,
            "url": sidecar.url,
            "gpus": plan.gpus,
            "capacity": capacity,
            "startup_s": round(sidecar.startup_s, 3),
            "command": launch.recorded(sidecar.command),
            "env": launch.recorded_env(plan.env),
        }
        for plan, sidecar, capacity in zip(plans, sidecars, capacities, strict=True)
    ]
    return Engines([s.url for s in sidecars], capacities, list(sidecars), record, instances)


def _read_prompts(path: str) -> pl.DataFrame:
    try:
        df = io.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise CliError(f"cannot read prompts {path}: {exc}") from exc
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise CliError(f"{path} lacks columns: {', '.join(missing)}")
    clash = [c for c in RESULT_SCHEMA if c in df.columns]
    if clash:
        raise CliError(f"{path} already has result columns: {', '.join(clash)}")
    if df["id"].null_count() or df["id"].n_unique() != df.height:
        raise CliError(f"{path}: ids must be unique and not null")
    return df


async def _run_stream(
    settings: dict,
    engines: Engines,
    checkpoint: Checkpoint,
    chat_server: bool,
    pending: list[Request],
    total: int,
    reused: int,
) -> tuple[Stream, int]:
    api = api_of(settings)
    # An endpoint may be protected (an Inference Endpoint): it gets the job's HF token from
    # the environment. The job's own servers never see it.
    endpoint = settings["engine"] == "endpoint"
    token = huggingface_hub.get_token() if endpoint else engine_api.NO_TOKEN
    capacity = sum(engines.capacities)
    concurrency = min(settings["concurrency"], capacity)
    async with _http_client(settings) as http:
        instances = [
            Instance(
                index,
                url,
                cap,
                engine_api.make_route(
                    api,
                    chat_server,
                    url,
                    settings["model"],
                    settings["sampling"],
                    token,
                    settings["request_timeout_s"],
                    http,
                ),
                sidecar,
            )
            for index, (url, cap, sidecar) in enumerate(
                zip(engines.urls, engines.capacities, engines.sidecars, strict=True)
            )
        ]
        log.info(
            "%d pending rows, %d engine instance(s) of capacity %s, concurrency %d",
            len(pending),
            len(instances),
            engines.capacities,
            concurrency,
        )
        stream = Stream(settings, instances, concurrency, checkpoint, total, reused)
        await stream.run(pending)
    return stream, concurrency


def run(
    prompts: str,
    output: str,
    provenance: str,
    checkpoint: str,
    engine_log: str,
    settings: dict,
) -> dict:
    """Generate one shard; returns the provenance written to `provenance`."""
    settings = validate_settings(settings)
    sampling = settings["sampling"]
    api = api_of(settings)
    try:
        template = chat_template.load(
            settings["chat_template"], settings["model"], settings["revision"]
        )
    except chat_template.ChatTemplateError as exc:
        raise CliError(str(exc)) from exc
    chat_server = template.mode == chat_template.SERVER
    route = engine_api.route_name(api, chat_server)
    context = None
    if template.mode is not None or route != engine_api.TgiGenerate.name:
        context = {"route": route, "chat_template": template.record()}

    df = _read_prompts(prompts)
    requests = []
    for row_id, prompt in zip(df["id"].to_list(), df["prompt"].to_list(), strict=True):
        seed = derive_seed(settings["dataset_version"], row_id)
        key = request_key(prompt, seed, settings["model"], settings["revision"], sampling, context)
        requests.append(Request(row_id, template.render(prompt), seed, key))

    ckpt = Checkpoint(checkpoint, settings["checkpoint_every"])
    reused = ckpt.load({r.id: r.key for r in requests})
    pending = [r for r in requests if r.id not in reused]
    log.info("%d rows, %d reused from %s", len(requests), len(reused), checkpoint)

    _use_plain_http_client(settings)
    with sigterm_raises(), contextlib.ExitStack() as stack:
        started = time.monotonic()
        engines = _start_engines(settings, engine_log, stack)
        startup_s = time.monotonic() - started

        ckpt.open()
        stack.callback(ckpt.close)  # also on SIGTERM and on errors: keep finished rows
        started = time.monotonic()
        try:
            stream, concurrency = asyncio.run(
                _run_stream(
                    settings, engines, ckpt, chat_server, pending, len(requests), len(reused)
                )
            )
        except EngineDied as exc:
            raise CliError(f"{exc}; finished rows are kept in {checkpoint}") from exc
        generation_s = time.monotonic() - started
        stream.log_progress()

    records = {**reused, **stream.results}
    results = [records[r.id] for r in requests]
    out = df.with_columns(
        [
            pl.Series(name, [rec[name] for rec in results], dtype=dtype)
            for name, dtype in RESULT_SCHEMA.items()
        ]
    )
    io.write_parquet(out, output)

    failures = collections.Counter(
        cause for cause in map(failure_cause, results) if cause is not None
    )
    ignored = stream.instances[0].route.ignored_sampling if stream.instances else ()
    engine_record = {
        **engines.record,
        "route": route,
        "chat_template": template.record(),
        "ignored_sampling": list(ignored),
    }
    for instance, sent in zip(engines.instances, stream.instances, strict=True):
        instance["requests"] = sent.sent
    prov = {
        "engine": engine_record,
        "instances": engines.instances,
        "model": settings["model"],
        "revision": settings["revision"],
        "dataset_version": settings["dataset_version"],
        "seed_scheme": f"derive_seed(dataset_version, id) = {SCHEME}",
        "sampling": sampling,
        "client": {
            "library": f"huggingface_hub {huggingface_hub.__version__}",
            "concurrency": concurrency,
            "concurrency_limit": settings["concurrency"],
            "engine_capacity": sum(engines.capacities),
            "request_timeout_s": settings["request_timeout_s"],
            "max_retries": settings["max_retries"],
            "backoff_base_s": settings["backoff_base_s"],
            "backoff_max_s": settings["backoff_max_s"],
        },
        "rows": len(results),
        "done": len(results) - sum(failures.values()),
        "failed": sum(failures.values()),
        "failures_by_cause": dict(sorted(failures.items())),
        "finish_reasons": dict(
            sorted(collections.Counter(r["finish_reason"] for r in results).items())
        ),
        "generated_tokens": sum(rec["text_token_length"] or 0 for rec in results),
        "retries": sum(rec["attempts"] - 1 for rec in results),
        "reused_from_checkpoint": len(reused),
        "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "timings": {"startup_s": round(startup_s, 3), "generation_s": round(generation_s, 3)},
    }
    io.write_json(prov, provenance)
    ckpt.path.unlink(missing_ok=True)
    log.info(
        "done: %d rows (%d reused), %d failed %s, %d tokens, %d retries, startup %.1f s, "
        "generation %.1f s",
        prov["rows"],
        len(reused),
        prov["failed"],
        prov["failures_by_cause"],
        prov["generated_tokens"],
        prov["retries"],
        startup_s,
        generation_s,
    )
    return prov


def add_arguments(name: str, parser) -> None:
    parser.add_argument("--prompts", required=True, help="prompts shard (Parquet)")
    parser.add_argument("--output", required=True, help="generations shard (Parquet)")
    parser.add_argument("--provenance", required=True, help="shard provenance (JSON)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="append-only JSONL of finished rows, outside the declared outputs; "
        "deleted once the output is written",
    )
    parser.add_argument("--engine-log", required=True, help="engine server log (appended)")
    parser.add_argument("--settings", required=True, help="generation settings (JSON or @file)")


def main(args) -> int:
    # One line per HTTP request would drown the progress lines.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    job = step_settings.load(step_settings.Generate, args.settings)
    run(
        args.prompts,
        args.output,
        args.provenance,
        args.checkpoint,
        args.engine_log,
        {"dataset_version": job.dataset_version, **step_settings.to_dict(job.generation)},
    )
    return 0
