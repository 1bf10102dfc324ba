"""What a request carries on each client route.

The generate step sends every row with its own seed and the sampling parameters of
`generation.sampling` (a parameter set to null is not sent). A server that receives a
field it does not know drops it without a word.

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


def route_path(api: str, chat_server: bool) -> str:
    """The route of protocol `api` ("tgi" or "openai"); `chat_server`: chat messages, the
    engine applies the chat template."""
    if chat_server:
        return CHAT
    return COMPLETIONS if api == "openai" else GENERATE
