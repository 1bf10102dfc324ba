"""What a request carries on each client route, and which of it each engine's server reads.

The generate step sends every row with its own seed and the sampling parameters of
`generation.sampling` (a parameter set to null is not sent). A server that receives a
field it does not know drops it without a word; so the engines declare, per route they
serve, the sampling parameters their server reads (`Engine.sampling_read`), and the
settings check refuses a parameter the chosen route would drop (`engines.check`).

Facts, from the servers' sources:

* TGI (router/src/lib.rs at v3.3.7): `/generate` (and `/`, which huggingface_hub's
  `text_generation` posts to) takes `GenerateParameters`: every parameter below and
  `seed`. `/v1/completions` (`CompletionRequest`) has no `top_k`. `/v1/chat/completions`
  (`ChatRequest`) has neither `top_k` nor `repetition_penalty` (its `presence_penalty` p
  becomes a repetition penalty of p + 2, which this project does not use).
* vLLM and SGLang: the OpenAI-compatible routes take `top_k` and `repetition_penalty` as
  extra fields. Neither serves TGI's `/generate` (SGLang's own `/generate` is another
  protocol).
* llama.cpp (llama-cpp-python 0.3.36's server, `api: llamacpp`; its /openapi.json and
  llama.h): `/v1/completions` and `/v1/chat/completions` read every parameter under its
  own names (`max_tokens`, `repeat_penalty`; `repetition_penalty` is not one of them) and
  drop unknown fields without a word; no `/generate`. A parameter left out takes its
  server's default, not "off" (top_k 40, repeat_penalty 1.1, min_p 0.05): a null one is
  sent as its off value instead (top_k 0: "k <= 0 makes this a noop"; repeat_penalty 1.0:
  "1.0 = disabled").
* The dummy engine (`generation.dummy`): every route, every parameter.

`max_new_tokens` travels as `max_tokens` on the OpenAI routes.
"""

from __future__ import annotations

import dataclasses

from cosmopedia.settings import Sampling

# The client protocols (`generation.api`).
APIS = ("tgi", "openai", "llamacpp")

GENERATE = "/generate"
COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"

# `generation.sampling`, in the order requests carry them; the per-row seed is always sent.
SAMPLING = tuple(field.name for field in dataclasses.fields(Sampling))
ALL = frozenset(SAMPLING)

# Route -> the sampling parameters the server reads there (a route absent: not served),
# and why some are missing.
TGI = {GENERATE: ALL, COMPLETIONS: ALL - {"top_k"}, CHAT: ALL - {"top_k", "repetition_penalty"}}
TGI_WHY = {
    COMPLETIONS: "TGI's CompletionRequest has no top_k",
    CHAT: "TGI's ChatRequest has neither top_k nor repetition_penalty",
}
OPENAI_SERVERS = {COMPLETIONS: ALL, CHAT: ALL}
EVERY_ROUTE = {GENERATE: ALL, COMPLETIONS: ALL, CHAT: ALL}
LLAMACPP = {COMPLETIONS: ALL, CHAT: ALL}
# What an endpoint's server reads, known from its protocol (the rest: OPENAI_SERVERS).
SERVERS_BY_API = {"tgi": TGI, "llamacpp": LLAMACPP}

# llama.cpp's names where they are not the settings', and the value of each parameter that
# may be null that turns its sampler off.
LLAMACPP_NAMES = {"max_new_tokens": "max_tokens", "repetition_penalty": "repeat_penalty"}
LLAMACPP_OFF = {"top_k": 0, "repetition_penalty": 1.0}


def route_path(api: str, chat_server: bool) -> str:
    """The route of protocol `api` ("tgi", "openai" or "llamacpp"); `chat_server`: chat
    messages, the engine applies the chat template."""
    if chat_server:
        return CHAT
    return GENERATE if api == "tgi" else COMPLETIONS
