"""Engine `endpoint`: a server that already runs at `generation.endpoint_url` (an
Inference Endpoint, a shared TGI or vLLM, a llama.cpp server with `api: llamacpp`): no
process, one instance. The job waits until its readiness route answers 200 (/health; a
llama.cpp server's /docs) and reads its /info. The client follows the environment's proxy
settings and authenticates as the URL says: its userinfo as HTTP Basic auth and its
secret query parameters with every request (planning moved both out of the URL into the
job's environment, `cosmopedia.redact`), else the bearer token COSMOPEDIA_ENDPOINT_TOKEN
or the job's HF token (a protected endpoint).

What the server reads is known from its protocol only: with `api: tgi` it is a TGI (its
routes read what TGI's do); with `api: llamacpp` a llama.cpp server (its names, every
parameter); with `api: openai` the sampling parameters go as vLLM and SGLang read them
(top_k and repetition_penalty as extra fields): a TGI behind an OpenAI URL would drop
top_k, which no check before the job can see."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from cosmopedia import redact
from cosmopedia.errors import CliError
from cosmopedia.generation import probes, wire
from cosmopedia.generation.engines.base import Engine, Server, Started
from cosmopedia.jsonvalues import is_int

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 10.0


class EndpointEngine(Engine):
    kind = "endpoint"
    default_api = "tgi"
    external = True
    apis = frozenset(wire.APIS)
    settings_used = frozenset({"endpoint_url", "server.max_concurrent_requests"})
    sampling_why = wire.TGI_WHY

    def sampling_table(self) -> dict[str, frozenset[str]]:
        return wire.SERVERS_BY_API.get(self.api, wire.OPENAI_SERVERS)

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

        return os.environ.get(redact.ENDPOINT_TOKEN_VAR) or huggingface_hub.get_token()

    def access(self) -> redact.EndpointAccess:
        """The base URL, query parameters and Basic auth of every request."""
        return redact.endpoint_access(self.generation.endpoint_url)

    def start(self, engine_log: str, stack: contextlib.ExitStack) -> Started:
        g = self.generation
        access = self.access()
        record = self.record()
        Path(engine_log).parent.mkdir(parents=True, exist_ok=True)
        with open(engine_log, "a", encoding="utf-8") as f:
            f.write(f"# endpoint engine at {record['endpoint_url']}: no process started\n")
        info = self.probe(access, g.startup_timeout_s)
        record |= {"command": None, "info": info, "image": None}
        value = (info or {}).get("max_concurrent_requests")
        capacity = value if is_int(value) and value >= 1 else g.server.max_concurrent_requests
        instance = {"index": 0, "url": record["endpoint_url"], "gpus": None}
        return Started([Server(0, access.base_url, capacity, instance)], record)

    def probe(self, access: redact.EndpointAccess, timeout_s: float) -> dict | None:
        """Wait until the endpoint's readiness route (/health; /docs for a llama.cpp
        server) answers 200; its /info (None if absent)."""
        import httpx2

        headers = {}
        token = self.token()
        if token:  # for protected endpoints, as the routes send it
            headers["Authorization"] = f"Bearer {token}"
        auth = httpx2.BasicAuth(*access.basic_auth) if access.basic_auth else None
        deadline = time.monotonic() + timeout_s
        shown = redact.text(self.generation.endpoint_url)
        ready = probes.ready_path(self.api)
        client = httpx2.Client(
            headers=headers,
            params=list(access.params),
            auth=auth,
            timeout=PROBE_TIMEOUT_S,
            follow_redirects=True,
        )
        with client as c:
            while True:
                try:
                    if c.get(f"{access.base_url}{ready}").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    raise CliError(f"endpoint {shown} was not healthy within {timeout_s:g} s")
                time.sleep(PROBE_INTERVAL_S)
            response = c.get(f"{access.base_url}/info")
        try:
            return response.json() if response.status_code == 200 else None
        except ValueError:  # not JSON: a server without TGI's /info
            return None
