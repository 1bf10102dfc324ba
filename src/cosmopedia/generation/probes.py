"""HTTP checks of an engine server: readiness, `/info`, and one smoke request per client
protocol (TGI's /generate, OpenAI's /v1/completions, llama.cpp's /v1/completions).

The smoke request is retried like any row's request: transient failures (429, 503, other
5xx, resets, timeouts) with seeded exponential backoff, up to `max_retries`, and each
attempt asks with another seed, so a fault that depends on the request (the dummy's
injected faults are a hash of it) does not repeat on every attempt and every rerun.

Standard library only (planning imports the engines, which name these) and no proxies:
the job's own servers listen on 127.0.0.1, and a proxy from the environment must never
see their requests.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from cosmopedia.seeding import rng_for

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 1.0
SMOKE_TIMEOUT_S = 120.0

_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProbeError(RuntimeError):
    """The server answered a probe, but not as a working engine would."""


@dataclass(frozen=True)
class Retries:
    """How a smoke request is retried: as the rows are (generation.max_retries, ...)."""

    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = SMOKE_TIMEOUT_S


def backoff_s(key: str, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter from a seeded RNG (reruns wait the same): the wait
    after attempt `attempt` (1, 2, ...) of the request named `key`."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rng_for("backoff", key, attempt).random())


def transient_status(status: int) -> bool:
    """HTTP statuses worth another attempt: overloaded, unavailable, server errors."""
    return status in (408, 429) or status >= 500


def http_json(url: str, payload=None, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, object]:
    """GET (or POST `payload` as JSON) without proxies: (status, parsed body or None)."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with _LOCAL_OPENER.open(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:  # not JSON (or not even text)
        return status, None


# The route whose 200 means "ready", per client protocol. llama-cpp-python's server has no
# /health (404); it loads the model before it listens, so any answer means loaded, and
# GET /docs is answered at once while it generates (/v1/models and /extras/tokenize wait
# for the running generation).
READY_PATHS = {"llamacpp": "/docs"}


def ready_path(api: str) -> str:
    return READY_PATHS.get(api, "/health")


def health(base_url: str) -> bool:
    """Ready once GET /health answers 200 (TGI, vLLM, SGLang, the dummy)."""
    status, _ = http_json(f"{base_url}/health", timeout=READY_TIMEOUT_S)
    return status == 200


def docs_ready(base_url: str) -> bool:
    """Ready once GET /docs answers 200 (llama-cpp-python's server)."""
    status, _ = http_json(f"{base_url}{READY_PATHS['llamacpp']}", timeout=READY_TIMEOUT_S)
    return status == 200


def tgi_smoke_payload(attempt: int) -> dict:
    """The body of smoke attempt `attempt` (1, 2, ...) to TGI's /generate."""
    return {"inputs": "Hello", "parameters": {"max_new_tokens": 2, "seed": attempt}}


def openai_smoke_payload(model: str, attempt: int) -> dict:
    """The body of smoke attempt `attempt` (1, 2, ...) to /v1/completions."""
    return {"model": model, "prompt": "Hello", "max_tokens": 2, "seed": attempt}


def _smoke(
    route: str, payload: Callable[[int], dict], answered: Callable[[object], bool], retries
) -> Callable[[str], None]:
    def smoke(base_url: str) -> None:
        url = f"{base_url}{route}"
        attempt = 0
        while True:
            attempt += 1
            try:
                status, body = http_json(url, payload(attempt), timeout=retries.timeout_s)
            except (OSError, http.client.HTTPException) as exc:  # reset, refused, timeout
                problem, transient = f"{type(exc).__name__}: {exc}", True
            else:
                if status == 200 and answered(body):
                    return
                problem, transient = f"HTTP {status} {body}", transient_status(status)
            if not transient or attempt > retries.max_retries:
                raise ProbeError(
                    f"smoke request to {url} failed (attempt {attempt} of "
                    f"{retries.max_retries + 1}): {problem}"
                )
            wait = backoff_s(
                f"smoke {route}", attempt, retries.backoff_base_s, retries.backoff_max_s
            )
            log.warning(
                "smoke request to %s: %s; attempt %d in %.1f s", url, problem, attempt + 1, wait
            )
            time.sleep(wait)

    return smoke


def tgi_smoke_request(base_url: str, retries: Retries = Retries()) -> None:
    """One tiny generation through TGI's /generate route (retried)."""
    _smoke(
        "/generate",
        tgi_smoke_payload,
        lambda body: isinstance(body, dict) and "generated_text" in body,
        retries,
    )(base_url)


def openai_smoke_request(model: str, retries: Retries = Retries()) -> Callable[[str], None]:
    """One tiny completion through the OpenAI-compatible /v1/completions route (retried)."""
    return _smoke(
        "/v1/completions",
        lambda attempt: openai_smoke_payload(model, attempt),
        lambda body: isinstance(body, dict) and bool(body.get("choices")),
        retries,
    )


def smoke_request(api: str, model: str, retries: Retries = Retries()) -> Callable[[str], None]:
    """The smoke request of client protocol `api` ("tgi", "openai" or "llamacpp": the
    OpenAI one, whose explicit seed per attempt llama.cpp needs, else it derives one from
    the previous request's)."""
    if api in ("openai", "llamacpp"):
        return openai_smoke_request(model, retries)
    return lambda base_url: tgi_smoke_request(base_url, retries)
