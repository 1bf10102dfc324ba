"""The client side of the engine protocols: `await route.generate(prompt, seed)`.

The routes of each protocol, chosen from `generation.api` and `generation.chat_template`
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
* llama.cpp (`api: llamacpp`, llama-cpp-python's server): the same two OpenAI paths with
  its own parameter names (`repeat_penalty`), every sampling default it would otherwise
  add set explicitly (`min_p` 0.05 and others, as TGI samples), a null top_k or
  repetition_penalty sent as its off value (not sent, its own defaults would apply), seeds
  mapped into the 32 bits it keeps, its finish reasons mapped to TGI's (`stop` ->
  `eos_token`). It silently ignores fields it does not know, so the body names only
  fields it has (the tests check them against its /openapi.json).

A sampling parameter set to null is not sent (llama.cpp: its off value). Which parameters
a server reads on each route is declared by its engine (`wire.py`); the settings check
refuses one that the route would drop, so every parameter a route sends is one its server
reads. `Route.parameters()` is what every request of a route carries besides the prompt
and the seed, as sent; `Route.record()` adds the path and, for a route that sends another
seed than the row's, how it maps it: the provenance records it as `engine.request`.

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
    # How the seed sent is made from the row's seed (None: sent as it is).
    seed_mapping: str | None = None

    def parameters(self) -> dict:
        """The fields every request carries besides the prompt and its seed, as sent."""
        raise NotImplementedError

    def record(self) -> dict:
        """What the engine receives, for provenance."""
        record = {"path": self.path, "parameters": self.parameters()}
        if self.seed_mapping is not None:
            record["seed"] = self.seed_mapping
        return record

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
            f"{self.base_url}{self.path}",
            json=self.payload(prompt, seed),
            headers=self.headers,
            timeout=self.timeout,
        )
        if response.status_code >= 400:
            raise EngineHTTPError(response.status_code, _error_message(response))
        try:
            return self.output(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProtocolError(f"unreadable {self.path} answer: {exc!r}") from exc

    def output(self, body: dict) -> Output:
        """The text, generated tokens and finish reason of an answer's body."""
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        return Output(choice["text"], usage.get("completion_tokens"), str(choice["finish_reason"]))


# llama.cpp keeps the low 32 bits of a seed and draws a random one for 0xFFFFFFFF: a
# 63-bit row seed is sent as seed % (2**32 - 1), in 0 .. 2**32 - 2 (recorded).
LLAMACPP_SEED_MODULUS = 2**32 - 1
LLAMACPP_SEED_MAPPING = f"row seed % {LLAMACPP_SEED_MODULUS}"
# Sampling the server applies unless told otherwise, set to what TGI does: no min_p cut
# (its default is 0.05), no presence or frequency penalty, no mirostat.
LLAMACPP_FIXED_SAMPLING = {
    "min_p": 0.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat_mode": 0,
}
# Its finish reasons in TGI's words: "stop" is an end-of-generation token (the client sends
# no stop strings), "length" max_tokens (or the context) reached.
LLAMACPP_FINISH_REASONS = {"stop": "eos_token", "length": "length"}


def llamacpp_seed(seed: int) -> int:
    """The seed llama.cpp receives for a row seed: deterministic, never its "random" value."""
    return seed % LLAMACPP_SEED_MODULUS


def _llamacpp_sampling(sampling: Sampling) -> dict:
    """`generation.sampling` as llama.cpp receives it, in `wire.SAMPLING` order: its names
    (wire.LLAMACPP_NAMES), a null parameter as its off value (wire.LLAMACPP_OFF: left out,
    the server's own default would apply)."""
    values = {name: getattr(sampling, name) for name in wire.SAMPLING}
    return {
        wire.LLAMACPP_NAMES.get(name, name): wire.LLAMACPP_OFF[name] if value is None else value
        for name, value in values.items()
    }


class LlamacppCompletions(Completions):
    """llama-cpp-python's /v1/completions: its names and defaults, the row's text prompt."""

    seed_mapping = LLAMACPP_SEED_MAPPING

    def parameters(self) -> dict:
        """Every field of the body but model, prompt and seed, under the server's names."""
        return {
            **_llamacpp_sampling(self.sampling),
            **LLAMACPP_FIXED_SAMPLING,
            "stream": False,
        }

    def payload(self, prompt: str, seed: int) -> dict:
        return {
            "model": self.model,
            "prompt": prompt,
            **self.parameters(),
            "seed": llamacpp_seed(seed),
        }

    def output(self, body: dict) -> Output:
        out = super().output(body)
        reason = LLAMACPP_FINISH_REASONS.get(out.finish_reason, out.finish_reason)
        return Output(out.text, out.tokens, reason)

    async def generate(self, prompt: str, seed: int) -> Output:
        if not prompt:  # the server fails it with an empty HTTP 500 (an assertion)
            raise EngineHTTPError(422, "empty prompt (refused by the client)")
        try:
            return await super().generate(prompt, seed)
        except EngineHTTPError as exc:
            # The server answers its request validation errors with HTTP 500.
            if exc.status == 500 and "validation error" in str(exc):
                raise EngineHTTPError(422, str(exc).removeprefix("HTTP 500: ")) from exc
            raise


class LlamacppChat(LlamacppCompletions):
    """llama-cpp-python's /v1/chat/completions: the server applies the GGUF's template (and
    adds its end-of-turn string as a stop string)."""

    name = wire.CHAT
    path = wire.CHAT

    def payload(self, prompt: str, seed: int) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            **self.parameters(),
            "seed": llamacpp_seed(seed),
        }

    def output(self, body: dict) -> Output:
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        reason = str(choice["finish_reason"])
        return Output(
            choice["message"]["content"],
            usage.get("completion_tokens"),
            LLAMACPP_FINISH_REASONS.get(reason, reason),
        )


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
# A protocol with routes of its own (the same paths, other names and defaults).
ROUTES_BY_API: dict[str, dict[str, type[Route]]] = {
    "llamacpp": {cls.name: cls for cls in (LlamacppCompletions, LlamacppChat)},
}


def route_class(api: str, chat_server: bool) -> type[Route]:
    """The route of protocol `api` ("tgi", "openai" or "llamacpp"); `chat_server`: chat
    messages, the engine applies the chat template."""
    return ROUTES_BY_API.get(api, ROUTES)[wire.route_path(api, chat_server)]


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
