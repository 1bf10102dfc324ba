"""The client side of the engine protocols: `await route.generate(prompt, seed)`.

Three routes, one per protocol, chosen from `generation.api` and `generation.chat_template`
(`wire.route_path`):

* `/generate` (TGI's text-generation API, engines `tgi`, `dummy`, TGI endpoints):
  huggingface_hub's `AsyncInferenceClient.text_generation(details=True)`, which takes
  every Cosmopedia sampling parameter (top_k, repetition_penalty, a per-request seed) and
  reports `finish_reason` and `generated_tokens`. huggingface_hub posts it to `/`, TGI's
  compat route (a non-streamed request there is a /generate request), as Cosmopedia's
  client did.
* `/v1/completions` (vLLM, SGLang, OpenAI-compatible endpoints): huggingface_hub has no
  method for OpenAI text completions (its `chat_completion` is chat only), so this is one
  JSON POST through httpx2, the HTTP library huggingface_hub itself uses. vLLM and SGLang
  take top_k, repetition_penalty and seed as extra fields of this route.
* `/v1/chat/completions` (`chat_template: server`): `AsyncInferenceClient.chat_completion`,
  the engine applies the model's own template. top_k and repetition_penalty go as extra
  fields.

A sampling parameter set to null is not sent. Which parameters a server reads on each
route is declared by its engine (`wire.py`); the settings check refuses one that the
route would drop, so every parameter a route sends is one its server reads.
`Route.parameters()` is what every request of a route carries besides the prompt and the
seed, as the provenance records it.

Errors keep their class (huggingface_hub's TGI errors, httpx2 transport errors, or
`EngineHTTPError` with the status) for `requests.classify`.

Every route of a job shares one plain httpx2 client (`plain_http_client`), also the one
huggingface_hub's clients use (`use_plain_http_client`). For an endpoint, that client adds
the endpoint's query parameters and HTTP Basic auth to every request
(`redact.EndpointAccess`): routes append their paths to a base URL without a query.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
import huggingface_hub
from huggingface_hub import AsyncInferenceClient

from cosmopedia.generation import wire
from cosmopedia.redact import EndpointAccess
from cosmopedia.settings import Sampling

ERROR_MESSAGE_CHARS = 500
# Connections beyond the request concurrency (a retry may open one while another closes).
SPARE_CONNECTIONS = 8


@dataclass(frozen=True)
class Output:
    text: str | None
    tokens: int | None
    finish_reason: str


class EngineHTTPError(Exception):
    """An HTTP error answer of an OpenAI-compatible route."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ProtocolError(RuntimeError):
    """The engine answered 200 with something this route cannot read: a wiring error."""


class Route:
    """One client protocol: `await generate(prompt, seed)` for each row of the shard."""

    name = ""  # the protocol's route (wire.py)
    path = ""  # the URL path the requests go to

    def parameters(self) -> dict:
        """The fields every request carries besides the prompt and its seed, as sent."""
        raise NotImplementedError

    def record(self) -> dict:
        """What the engine receives, for provenance."""
        return {"path": self.path, "parameters": self.parameters()}

    @classmethod
    def make(
        cls,
        base_url: str,
        model: str,
        sampling: Sampling,
        token: str | None,
        timeout: float,
        *,
        api: str,
        http: httpx2.AsyncClient,
    ) -> Route:
        """The route to one server; `api` is the engine's protocol, `http` the job's client."""
        return cls(base_url, model, sampling, token, timeout)

    def __init__(
        self, base_url: str, model: str, sampling: Sampling, token: str | None, timeout: float
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.sampling = sampling
        self.token = token
        self.timeout = timeout

    async def generate(self, prompt: str, seed: int) -> Output:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class TgiGenerate(Route):
    name = wire.GENERATE
    path = "/"  # huggingface_hub's text_generation posts to TGI's compat route

    def __init__(self, *args):
        super().__init__(*args)
        self.client = AsyncInferenceClient(
            base_url=self.base_url, api_key=self.token, timeout=self.timeout
        )

    def parameters(self) -> dict:
        # `do_sample` changes nothing next to a temperature (TGI samples when any of
        # temperature/top_k/top_p is set); Cosmopedia's client left it out.
        return {"details": True, "do_sample": True, **_sampling(self.sampling)}

    async def generate(self, prompt: str, seed: int) -> Output:
        output = await self.client.text_generation(prompt, seed=seed, **self.parameters())
        # huggingface_hub retries without the parameters a non-TGI server refuses, and
        # then returns the text alone: a wiring error, never a silently dropped setting.
        details = getattr(output, "details", None)
        if details is None:
            raise ProtocolError("the engine returned no details: is it a TGI-protocol server?")
        return Output(output.generated_text, details.generated_tokens, str(details.finish_reason))

    async def close(self) -> None:
        await self.client.close()


class ChatCompletions(Route):
    name = wire.CHAT
    path = wire.CHAT
    # Fields of the OpenAI chat API; the others go as extra fields of the body.
    STANDARD = ("max_tokens", "temperature", "top_p")

    def __init__(self, *args):
        super().__init__(*args)
        self.client = AsyncInferenceClient(
            base_url=self.base_url, api_key=self.token, timeout=self.timeout
        )

    def parameters(self) -> dict:
        return _openai_sampling(self.sampling)

    async def generate(self, prompt: str, seed: int) -> Output:
        params = self.parameters()
        standard = {k: v for k, v in params.items() if k in self.STANDARD}
        extra = {k: v for k, v in params.items() if k not in self.STANDARD}
        output = await self.client.chat_completion(
            messages=[{"role": "user", "content": prompt}],
            model=self.model,
            seed=seed,
            **standard,
            extra_body=extra or None,
        )
        if not output.choices:
            raise ProtocolError("the engine returned no choices")
        choice = output.choices[0]
        tokens = output.usage.completion_tokens if output.usage is not None else None
        return Output(choice.message.content, tokens, str(choice.finish_reason))

    async def close(self) -> None:
        await self.client.close()


class Completions(Route):
    name = wire.COMPLETIONS
    path = wire.COMPLETIONS

    def __init__(self, *args, http: httpx2.AsyncClient):
        super().__init__(*args)
        self.http = http
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @classmethod
    def make(cls, *args, api: str, http: httpx2.AsyncClient) -> Route:
        return cls(*args, http=http)

    def payload(self, prompt: str, seed: int) -> dict:
        """The request body (an engine with other names for the sampling parameters
        subclasses this route and changes them here)."""
        return {
            "model": self.model,
            "prompt": prompt,
            **_openai_sampling(self.sampling),
            "seed": seed,
            "stream": False,
        }

    def parameters(self) -> dict:
        body = self.payload("", 0)
        return {k: v for k, v in body.items() if k not in ("model", "prompt", "seed")}

    async def generate(self, prompt: str, seed: int) -> Output:
        response = await self.http.post(
            f"{self.base_url}/v1/completions",
            json=self.payload(prompt, seed),
            headers=self.headers,
            timeout=self.timeout,
        )
        if response.status_code >= 400:
            raise EngineHTTPError(response.status_code, _error_message(response))
        try:
            body = response.json()
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Output(
                choice["text"], usage.get("completion_tokens"), str(choice["finish_reason"])
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProtocolError(f"unreadable /v1/completions answer: {exc!r}") from exc


def _sampling(sampling: Sampling) -> dict:
    """`generation.sampling` by TGI's names, in `wire.SAMPLING` order; null ones left out."""
    values = {name: getattr(sampling, name) for name in wire.SAMPLING}
    return {name: value for name, value in values.items() if value is not None}


def _openai_sampling(sampling: Sampling) -> dict:
    """The same by the OpenAI names (`max_tokens`)."""
    values = _sampling(sampling)
    return {"max_tokens": values.pop("max_new_tokens"), **values}


def _error_message(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:ERROR_MESSAGE_CHARS]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI / vLLM: {"error": {"message": ...}}
        return str(error.get("message"))[:ERROR_MESSAGE_CHARS]
    if isinstance(body, dict) and "message" in body:  # older vLLM: {"object": "error", ...}
        return str(body["message"])[:ERROR_MESSAGE_CHARS]
    return str(error if error is not None else body)[:ERROR_MESSAGE_CHARS]


ROUTES: dict[str, type[Route]] = {
    cls.name: cls for cls in (TgiGenerate, Completions, ChatCompletions)
}


def route_class(api: str, chat_server: bool) -> type[Route]:
    """The route of protocol `api` ("tgi" or "openai"); `chat_server`: chat messages, the
    engine applies the chat template."""
    return ROUTES[wire.route_path(api, chat_server)]


def plain_http_client(
    concurrency: int, trust_env: bool, access: EndpointAccess | None = None
) -> httpx2.AsyncClient:
    """A plain httpx client sized for `concurrency` requests in flight.

    huggingface_hub's default async client refuses every request when HF_HUB_OFFLINE=1
    (usual on offline GPU nodes, where the engine loads a cached model), and follows proxy
    settings that must not apply to the job's own loopback servers (`trust_env` False).
    `access`: an endpoint's query parameters and Basic auth, sent with every request (the
    auth replaces the bearer header huggingface_hub sets).
    """
    size = concurrency + SPARE_CONNECTIONS
    limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
    options = {}
    if access is not None:
        options["params"] = list(access.params)
        if access.basic_auth is not None:
            options["auth"] = httpx2.BasicAuth(*access.basic_auth)
    return httpx2.AsyncClient(
        limits=limits, timeout=None, follow_redirects=True, trust_env=trust_env, **options
    )


def use_plain_http_client(
    concurrency: int, trust_env: bool, access: EndpointAccess | None = None
) -> None:
    """huggingface_hub's clients (TgiGenerate, ChatCompletions) get `plain_http_client`s."""
    huggingface_hub.set_async_client_factory(
        lambda: plain_http_client(concurrency, trust_env, access)
    )
