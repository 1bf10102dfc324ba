"""HTTP checks of an engine server: readiness, `/info`, and one smoke request per client
protocol (TGI's /generate, OpenAI's /v1/completions, llama.cpp's /v1/completions).

Standard library only (planning imports the engines, which name these) and no proxies:
the job's own servers listen on 127.0.0.1, and a proxy from the environment must never
see their requests.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

PROBE_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 1.0
SMOKE_TIMEOUT_S = 120.0

_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProbeError(RuntimeError):
    """The server answered a probe, but not as a working engine would."""


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


def tgi_smoke_request(base_url: str) -> None:
    """One tiny generation through TGI's /generate route."""
    status, body = http_json(
        f"{base_url}/generate",
        {"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
        timeout=SMOKE_TIMEOUT_S,
    )
    if status != 200 or not isinstance(body, dict) or "generated_text" not in body:
        raise ProbeError(f"smoke request to {base_url}/generate failed: HTTP {status} {body}")


def openai_smoke_request(model: str, extra: dict | None = None) -> Callable[[str], None]:
    """One tiny completion through the OpenAI-compatible /v1/completions route."""

    def smoke(base_url: str) -> None:
        status, body = http_json(
            f"{base_url}/v1/completions",
            {"model": model, "prompt": "Hello", "max_tokens": 2, **(extra or {})},
            timeout=SMOKE_TIMEOUT_S,
        )
        if status != 200 or not isinstance(body, dict) or not body.get("choices"):
            raise ProbeError(
                f"smoke request to {base_url}/v1/completions failed: HTTP {status} {body}"
            )

    return smoke


def smoke_request(api: str, model: str) -> Callable[[str], None]:
    """The smoke request of client protocol `api` ("tgi", "openai" or "llamacpp")."""
    if api == "llamacpp":  # a seed of its own: without one the server derives it from the last
        return openai_smoke_request(model, {"seed": 0})
    return openai_smoke_request(model) if api == "openai" else tgi_smoke_request
