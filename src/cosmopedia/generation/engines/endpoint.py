"""Engine `endpoint`: a server that already runs at `generation.endpoint_url` (an
Inference Endpoint, a shared TGI or vLLM, a llama.cpp server with `api: llamacpp`): no
process, one instance. The job waits until its /health (a llama.cpp server: /docs)
answers 200 and reads its /info. The client follows the environment's proxy
settings and sends the job's HF token (a protected endpoint)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from cosmopedia import redact
from cosmopedia.errors import CliError
from cosmopedia.generation import probes
from cosmopedia.generation.engines.base import Engine, Server, Started
from cosmopedia.jsonvalues import is_int

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 10.0


class EndpointEngine(Engine):
    kind = "endpoint"
    default_api = "tgi"
    external = True

    def check(self) -> None:
        g = self.generation
        url = g.endpoint_url
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise CliError(
                "generation.endpoint_url must be an http(s) URL for engine endpoint: "
                f"{redact.text(str(url))!r}"
            )
        if g.instances != 1:
            raise CliError("generation.instances must be 1 for engine endpoint (one URL)")

    def token(self) -> str | None:
        import huggingface_hub

        return huggingface_hub.get_token()

    def start(self, engine_log: str, stack: contextlib.ExitStack) -> Started:
        g = self.generation
        base_url = g.endpoint_url.rstrip("/")
        record = self.record()
        Path(engine_log).parent.mkdir(parents=True, exist_ok=True)
        with open(engine_log, "a", encoding="utf-8") as f:
            f.write(f"# endpoint engine at {record['endpoint_url']}: no process started\n")
        info = self.probe(base_url, g.startup_timeout_s)
        record |= {"command": None, "info": info, "image": None}
        value = (info or {}).get("max_concurrent_requests")
        capacity = value if is_int(value) and value >= 1 else g.server.max_concurrent_requests
        instance = {"index": 0, "url": record["endpoint_url"], "gpus": None}
        return Started([Server(0, base_url, capacity, instance)], record)

    def probe(self, url: str, timeout_s: float) -> dict | None:
        """Wait until the endpoint's readiness route (/health; /docs for a llama.cpp
        server) answers 200; its /info (None if absent)."""
        import httpx2
        from huggingface_hub.utils import build_hf_headers

        headers = build_hf_headers()  # the token, if any, for protected endpoints
        deadline = time.monotonic() + timeout_s
        shown = redact.text(url)
        ready = probes.ready_path(self.api)
        with httpx2.Client(headers=headers, timeout=PROBE_TIMEOUT_S, follow_redirects=True) as c:
            while True:
                try:
                    if c.get(f"{url}{ready}").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    raise CliError(f"endpoint {shown} was not healthy within {timeout_s:g} s")
                time.sleep(PROBE_INTERVAL_S)
            response = c.get(f"{url}/info")
        try:
            return response.json() if response.status_code == 200 else None
        except ValueError:  # not JSON: a server without TGI's /info
            return None
