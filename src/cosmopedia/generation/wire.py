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
* The dummy engine (`generation.dummy`): every route, every parameter.

`max_new_tokens` travels as `max_tokens` on the OpenAI routes.
"""

from __future__ import annotations

import dataclasses

from cosmopedia.settings import Sampling

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


def route_path(api: str, chat_server: bool) -> str:
    """The route of protocol `api` ("tgi" or "openai"); `chat_server`: chat messages, the
    engine applies the chat template."""
    if chat_server:
        return CHAT
    return COMPLETIONS if api == "openai" else GENERATE
