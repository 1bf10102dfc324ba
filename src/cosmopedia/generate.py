"""Prompts shard -> generations shard, through an engine server (a sidecar or an endpoint).

One bounded-concurrency stream of requests covers the whole shard (no chunk barriers).
Each row gets a seed derived from (dataset version, row id); failures are retried by
error class with seeded, jittered exponential backoff. Every finished row is appended to
a checkpoint beside the output, keyed by a hash of everything that determines its request,
so a killed job resumes without re-sending finished rows. The output is written
atomically, then the checkpoint is deleted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import huggingface_hub
import polars as pl
from huggingface_hub import AsyncInferenceClient, errors
from huggingface_hub.utils import build_hf_headers

from cosmopedia import io
from cosmopedia.cli import CliError, load_settings
from cosmopedia.engines.sidecar import Sidecar, SidecarError, sigterm_raises
from cosmopedia.seeding import SCHEME, derive_seed, rng_for

log = logging.getLogger(__name__)

ENGINES = ("dummy", "endpoint")
SETTINGS_KEYS = (
    "dataset_version",
    "engine",
    "endpoint_url",
    "model",
    "revision",
    "concurrency",
    "request_timeout_s",
    "max_retries",
    "backoff_base_s",
    "backoff_max_s",
    "startup_timeout_s",
    "checkpoint_every",
    "sampling",
    "dummy",
)
SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")
DUMMY_KEYS = ("latency_per_token_s", "max_concurrent")
INPUT_COLUMNS = ("id", "source", "family", "prompt", "seed_data", "format", "audience")
RESULT_SCHEMA = {
    "text": pl.String,
    "text_token_length": pl.Int64,
    "finish_reason": pl.String,
    "seed": pl.Int64,
    "attempts": pl.Int64,
    "error": pl.String,
}
# The dummy's launch command as recorded in provenance: no absolute paths in outputs.
RECORDED_PYTHON = "python"
PROGRESS_EVERY_S = 5.0
WATCH_EVERY_S = 0.5
ERROR_MESSAGE_CHARS = 500


class EngineDied(Exception):
    """The sidecar engine exited while the job still needed it."""


def _require_keys(where: str, value, keys: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise CliError(f"{where} must be a JSON object")
    missing = [k for k in keys if k not in value]
    unknown = sorted(set(value) - set(keys))
    if missing:
        raise CliError(f"{where} is missing: {', '.join(missing)}")
    if unknown:
        raise CliError(f"{where} has unknown keys: {', '.join(unknown)}")


def validate_settings(settings) -> dict:
    """Check that `settings` has exactly the expected keys and sensible values."""
    _require_keys("--settings", settings, SETTINGS_KEYS)
    _require_keys("--settings sampling", settings["sampling"], SAMPLING_KEYS)
    _require_keys("--settings dummy", settings["dummy"], DUMMY_KEYS)
    if settings["engine"] not in ENGINES:
        raise CliError(f"--settings engine must be one of {ENGINES}, not {settings['engine']!r}")
    url = settings["endpoint_url"]
    if settings["engine"] == "endpoint" and not (
        isinstance(url, str) and url.startswith(("http://", "https://"))
    ):
        raise CliError(
            f"--settings endpoint_url must be an http(s) URL for engine endpoint: {url!r}"
        )
    for key in ("dataset_version", "model", "revision"):
        if not isinstance(settings[key], str) or not settings[key]:
            raise CliError(f"--settings {key} must be a non-empty string")
    minimums = {"concurrency": 1, "max_retries": 0, "checkpoint_every": 1}
    for key, minimum in minimums.items():
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise CliError(f"--settings {key} must be an integer >= {minimum}")
    for key in ("request_timeout_s", "startup_timeout_s", "backoff_base_s", "backoff_max_s"):
        value = settings[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise CliError(f"--settings {key} must be a number >= 0")
        if key.endswith("timeout_s") and value == 0:
            raise CliError(f"--settings {key} must be > 0")
    return settings


def request_key(prompt: str, seed: int, model: str, revision: str, sampling: dict) -> str:
    """Identifies a request: a checkpointed row is reused only if its key still matches."""
    payload = json.dumps(
        {
            "prompt": prompt,
            "seed": seed,
            "model": model,
            "revision": revision,
            "sampling": sampling,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def backoff_s(row_id: str, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter from a seeded RNG (reruns wait the same)."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rng_for("backoff", row_id, attempt).random())


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
    # Other HTTP errors: the status sits on the error or on the HTTP error it wraps.
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return f"http_{status}", status == 429 or status >= 500
    return None


class Checkpoint:
    """Append-only JSON lines of finished rows, beside (never inside) the declared output."""

    def __init__(self, path: str | os.PathLike, flush_every: int):
        self.path = Path(path)
        self.flush_every = flush_every
        self.unflushed = 0
        self.file = None

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
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def append(self, record: dict) -> None:
        self.file.write(_json_line(record))
        self.unflushed += 1
        if self.unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.unflushed = 0

    def close(self) -> None:
        if self.file is not None:
            self.flush()
            self.file.close()
            self.file = None


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Request:
    id: str
    prompt: str
    seed: int
    key: str


class Stream:
    """Sends the pending requests with at most `concurrency` in flight and records each row."""

    def __init__(
        self,
        settings: dict,
        base_url: str,
        sidecar,
        checkpoint: Checkpoint,
        total: int,
        reused: int,
    ):
        self.settings = settings
        self.base_url = base_url
        self.sidecar = sidecar
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
        self.client = None

    async def run(self, pending: list[Request]) -> None:
        self.remaining = len(pending)
        if not pending:
            self.all_done.set()
        self.client = AsyncInferenceClient(
            base_url=self.base_url, timeout=self.settings["request_timeout_s"]
        )
        queue = iter(pending)
        workers = min(self.settings["concurrency"], len(pending))
        tasks = [asyncio.create_task(self._worker(queue)) for _ in range(workers)]
        tasks.append(asyncio.create_task(self._watch()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.client.close()

    async def _worker(self, queue) -> None:
        # Workers share one iterator: each takes the next row as soon as it is free.
        for request in queue:
            record = await self._generate(request)
            self.results[request.id] = record
            self.checkpoint.append(record)
            self.failed += record["error"] is not None
            self.tokens += record["text_token_length"] or 0
            self.remaining -= 1
            if self.remaining == 0:
                self.all_done.set()

    async def _watch(self) -> None:
        """Abort as soon as the sidecar dies; log progress every few seconds."""
        next_log = time.monotonic() + PROGRESS_EVERY_S
        while not self.all_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_done.wait(), WATCH_EVERY_S)
            self._check_engine()
            if time.monotonic() >= next_log:
                self.log_progress()
                next_log += PROGRESS_EVERY_S

    def _check_engine(self) -> None:
        if self.sidecar is not None and not self.sidecar.alive():
            raise EngineDied(
                f"the engine exited (code {self.sidecar.process.returncode}); "
                f"see {self.sidecar.log_path}"
            )

    def log_progress(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        log.info(
            "%d/%d rows (%d from checkpoint), %.1f rows/s, %.0f tokens/s, %d failed, %d retries",
            self.reused + len(self.results),
            self.total,
            self.reused,
            len(self.results) / elapsed,
            self.tokens / elapsed,
            self.failed,
            self.retries,
        )

    async def _generate(self, request: Request) -> dict:
        sampling = self.settings["sampling"]
        attempt = 0
        while True:
            attempt += 1
            try:
                output = await self.client.text_generation(
                    request.prompt,
                    details=True,
                    seed=request.seed,
                    do_sample=True,
                    max_new_tokens=sampling["max_new_tokens"],
                    temperature=sampling["temperature"],
                    top_p=sampling["top_p"],
                    top_k=sampling["top_k"],
                    repetition_penalty=sampling["repetition_penalty"],
                )
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                # A dead sidecar fails every row: abort so that the job is retried instead.
                self._check_engine()
                cause, transient = failure
                if not transient or attempt > self.settings["max_retries"]:
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    return _record(
                        request,
                        attempt,
                        error=f"{cause}: {message[:ERROR_MESSAGE_CHARS]}",
                        transient=transient,
                    )
                self.retries += 1
                await asyncio.sleep(
                    backoff_s(
                        request.id,
                        attempt,
                        self.settings["backoff_base_s"],
                        self.settings["backoff_max_s"],
                    )
                )
                continue
            if output.details is None:
                raise RuntimeError("the engine returned no details: is it a TGI-protocol server?")
            return _record(
                request,
                attempt,
                text=output.generated_text,
                tokens=output.details.generated_tokens,
                finish_reason=str(output.details.finish_reason),
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


def _use_plain_http_client(settings: dict) -> None:
    """Send requests through a plain httpx client sized for our concurrency.

    huggingface_hub's default async client refuses every request when HF_HUB_OFFLINE=1
    (usual on offline GPU nodes, where the engine loads a cached model), and follows proxy
    settings that must not apply to the job's own loopback server.
    """
    limits = httpx2.Limits(
        max_connections=settings["concurrency"], max_keepalive_connections=settings["concurrency"]
    )
    trust_env = settings["engine"] == "endpoint"
    huggingface_hub.set_async_client_factory(
        lambda: httpx2.AsyncClient(
            limits=limits, timeout=None, follow_redirects=True, trust_env=trust_env
        )
    )


def dummy_command(settings: dict) -> list[str]:
    dummy = settings["dummy"]
    return [
        sys.executable,
        "-m",
        "cosmopedia.cli",
        "serve-dummy",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--model-id",
        settings["model"],
        "--latency-per-token",
        str(dummy["latency_per_token_s"]),
        "--max-concurrent",
        str(dummy["max_concurrent"]),
    ]


def _probe_endpoint(url: str, timeout_s: float) -> dict | None:
    """Wait until the endpoint's /health answers 200; return its /info (None if absent)."""
    headers = build_hf_headers()  # the token, if any, for protected endpoints
    deadline = time.monotonic() + timeout_s
    with httpx2.Client(headers=headers, timeout=10.0, follow_redirects=True) as client:
        while True:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise CliError(f"endpoint {url} was not healthy within {timeout_s:g} s")
            time.sleep(1.0)
        response = client.get(f"{url}/info")
    try:
        return response.json() if response.status_code == 200 else None
    except ValueError:  # not JSON: a server without TGI's /info
        return None


def _start_engine(settings: dict, engine_log: str, stack: contextlib.ExitStack):
    """(base URL, sidecar or None, engine record for provenance); the stack stops it."""
    engine: dict = {"kind": settings["engine"], "endpoint_url": settings["endpoint_url"]}
    if settings["engine"] == "dummy":
        command = dummy_command(settings)
        sidecar = Sidecar(command, engine_log, startup_timeout_s=settings["startup_timeout_s"])
        try:
            stack.enter_context(sidecar)
        except SidecarError as exc:
            raise CliError(str(exc)) from exc
        engine["command"] = [RECORDED_PYTHON, *command[1:]]
        engine["info"] = sidecar.info
        return sidecar.url, sidecar, engine
    base_url = settings["endpoint_url"].rstrip("/")
    Path(engine_log).parent.mkdir(parents=True, exist_ok=True)
    with open(engine_log, "a", encoding="utf-8") as f:
        f.write(f"# endpoint engine at {base_url}: no process started by this job\n")
    engine["command"] = None
    engine["info"] = _probe_endpoint(base_url, settings["startup_timeout_s"])
    return base_url, None, engine


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
    df = _read_prompts(prompts)
    requests = []
    for row_id, prompt in zip(df["id"].to_list(), df["prompt"].to_list(), strict=True):
        seed = derive_seed(settings["dataset_version"], row_id)
        key = request_key(prompt, seed, settings["model"], settings["revision"], sampling)
        requests.append(Request(row_id, prompt, seed, key))

    ckpt = Checkpoint(checkpoint, settings["checkpoint_every"])
    reused = ckpt.load({r.id: r.key for r in requests})
    pending = [r for r in requests if r.id not in reused]
    log.info("%d rows, %d reused from %s", len(requests), len(reused), checkpoint)

    _use_plain_http_client(settings)
    with sigterm_raises(), contextlib.ExitStack() as stack:
        started = time.monotonic()
        base_url, sidecar, engine = _start_engine(settings, engine_log, stack)
        startup_s = time.monotonic() - started

        stream = Stream(settings, base_url, sidecar, ckpt, len(requests), len(reused))
        ckpt.open()
        stack.callback(ckpt.close)  # also on SIGTERM and on errors: keep finished rows
        started = time.monotonic()
        try:
            asyncio.run(stream.run(pending))
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
        rec["error"].split(":", 1)[0] for rec in results if rec["error"] is not None
    )
    prov = {
        "engine": engine,
        "model": settings["model"],
        "revision": settings["revision"],
        "dataset_version": settings["dataset_version"],
        "seed_scheme": f"derive_seed(dataset_version, id) = {SCHEME}",
        "sampling": sampling,
        "client": {
            "library": f"huggingface_hub {huggingface_hub.__version__}",
            "concurrency": settings["concurrency"],
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
    run(
        args.prompts,
        args.output,
        args.provenance,
        args.checkpoint,
        args.engine_log,
        load_settings(args.settings),
    )
    return 0
