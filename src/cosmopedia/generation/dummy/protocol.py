"""The wire formats the dummy engine speaks, as pure functions: request bodies of TGI's
`/generate` and of the OpenAI-compatible `/v1/completions` and `/v1/chat/completions`
(vLLM, SGLang) validated as those servers do, and their answer and error bodies.

The server (`server.py`) turns every body into TGI's `parameters` (inputs, max_new_tokens,
seed, ...) and the errors into HTTP answers.
"""

from __future__ import annotations

import hashlib

from cosmopedia.generation.dummy.text import apply_chat_template, count_tokens
from cosmopedia.jsonvalues import is_int, is_number

MAX_INPUT_TOKENS = 24576
MAX_TOTAL_TOKENS = 32768
MAX_STOP_SEQUENCES = 4
SEED_LIMIT = 2**64
CHAT_ROLES = ("system", "user", "assistant")


class RequestError(Exception):
    """A request the server answers with TGI's error JSON."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def _validation(message: str) -> RequestError:
    return RequestError(422, "validation", f"Input validation error: {message}")


def parse_request(body) -> tuple[str, dict, int, int | None]:
    """Validate a /generate body as TGI does: (inputs, parameters, max_new_tokens, seed)."""
    if not isinstance(body, dict):
        raise _validation("the request body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise _validation("`inputs` must be a string")
    prompt_tokens = count_tokens(inputs)
    if prompt_tokens == 0:
        raise _validation("`inputs` cannot be empty")
    if prompt_tokens > MAX_INPUT_TOKENS:
        raise _validation(
            f"`inputs` must have less than {MAX_INPUT_TOKENS} tokens. Given: {prompt_tokens}"
        )
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _validation("`parameters` must be an object")

    max_new_tokens = params.get("max_new_tokens")
    if max_new_tokens is None:
        # As TGI 3: without a limit, the generation may fill the rest of the context.
        max_new_tokens = MAX_TOTAL_TOKENS - prompt_tokens
    elif not is_int(max_new_tokens) or max_new_tokens < 1:
        raise _validation("`max_new_tokens` must be strictly positive")
    if prompt_tokens + max_new_tokens > MAX_TOTAL_TOKENS:
        raise _validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. "
            f"Given: {prompt_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    seed = params.get("seed")
    if seed is not None and (not is_int(seed) or not 0 <= seed < SEED_LIMIT):
        raise _validation("`seed` must be a non-negative integer below 2**64")
    for name in ("temperature", "repetition_penalty", "frequency_penalty", "typical_p"):
        value = params.get(name)
        if value is not None and (not is_number(value) or value <= 0):
            raise _validation(f"`{name}` must be strictly positive")
    top_p = params.get("top_p")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise _validation("`top_p` must be > 0.0 and <= 1.0")
    top_k = params.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise _validation("`top_k` must be strictly positive")
    for name in ("do_sample", "details", "return_full_text", "decoder_input_details"):
        if params.get(name) is not None and not isinstance(params[name], bool):
            raise _validation(f"`{name}` must be a boolean")
    stop = params.get("stop")
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise _validation("`stop` must be a list of strings")
    if stop and len(stop) > MAX_STOP_SEQUENCES:
        raise _validation(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences")
    return inputs, params, max_new_tokens, seed


class OpenAIError(RequestError):
    """An error of the OpenAI-compatible routes (vLLM's error JSON)."""


def _openai_validation(exc: RequestError) -> OpenAIError:
    return OpenAIError(400, "BadRequestError", str(exc))


def _openai_parameters(body: dict) -> dict:
    """TGI `parameters` for an OpenAI completions/chat body (then validated as by TGI)."""
    params: dict = {"details": True, "do_sample": True}
    if body.get("max_tokens") is not None:
        params["max_new_tokens"] = body["max_tokens"]
    for name in ("seed", "top_p", "repetition_penalty"):
        if body.get(name) is not None:
            params[name] = body[name]
    # OpenAI servers take temperature 0 (greedy) and top_k -1 (off); TGI's checks do not.
    if body.get("temperature") not in (None, 0, 0.0):
        params["temperature"] = body["temperature"]
    if body.get("top_k") not in (None, -1, 0):
        params["top_k"] = body["top_k"]
    return params


def _check_openai_body(body, model_id: str) -> dict:
    if not isinstance(body, dict):
        raise OpenAIError(400, "BadRequestError", "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != model_id:
        raise OpenAIError(404, "NotFoundError", f"The model `{model}` does not exist.")
    if body.get("stream"):
        raise OpenAIError(400, "BadRequestError", "the dummy engine does not stream")
    if body.get("n") not in (None, 1):
        raise OpenAIError(400, "BadRequestError", "the dummy engine answers n=1 only")
    return body


def parse_completions(body, model_id: str) -> tuple[str, dict, int, int | None]:
    """Validate a /v1/completions body: as `parse_request`."""
    body = _check_openai_body(body, model_id)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise OpenAIError(400, "BadRequestError", "`prompt` must be a string")
    try:
        return parse_request({"inputs": prompt, "parameters": _openai_parameters(body)})
    except RequestError as exc:
        raise _openai_validation(exc) from None


def parse_chat(body, model_id: str) -> tuple[str, dict, int, int | None]:
    """Validate a /v1/chat/completions body; the inputs are the rendered chat template."""
    body = _check_openai_body(body, model_id)
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict)
            and m.get("role") in CHAT_ROLES
            and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise OpenAIError(
            400, "BadRequestError", "`messages` must be a non-empty list of role/content"
        )
    if not any(m["content"].strip() for m in messages):
        raise OpenAIError(400, "BadRequestError", "the messages have no content")
    prompt = apply_chat_template(messages)
    try:
        return parse_request({"inputs": prompt, "parameters": _openai_parameters(body)})
    except RequestError as exc:
        raise _openai_validation(exc) from None


def tgi_answer(
    inputs: str, params: dict, seed: int | None, text: str, n_tokens: int, finish_reason: str
) -> dict:
    """The body of a /generate answer (one item of the list `/` answers)."""
    if params.get("return_full_text"):
        text = inputs + text
    answer: dict = {"generated_text": text}
    if params.get("details"):
        answer["details"] = {
            "finish_reason": finish_reason,
            "generated_tokens": n_tokens,
            "seed": seed,
            "prefill": [],
            "tokens": [],
        }
    return answer


def openai_answer(
    api: str, model_id: str, text: str, n_tokens: int, prompt_tokens: int, finish_reason: str
) -> dict:
    """The body of a /v1/completions (`api` "completions") or /v1/chat/completions answer."""
    reason = "length" if finish_reason == "length" else "stop"
    choice: dict = {"index": 0, "logprobs": None, "finish_reason": reason}
    if api == "chat":
        choice["message"] = {"role": "assistant", "content": text}
        kind, prefix = "chat.completion", "chatcmpl"
    else:
        choice["text"] = text
        kind, prefix = "text_completion", "cmpl"
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n_tokens,
        "total_tokens": prompt_tokens + n_tokens,
    }
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return {
        "id": f"{prefix}-{digest}",
        "object": kind,
        "created": 0,
        "model": model_id,
        "choices": [choice],
        "usage": usage,
    }


def error_body(exc: RequestError, openai: bool = False) -> dict:
    """TGI's error JSON, or the OpenAI one (vLLM's) for the OpenAI-compatible routes."""
    if openai:
        kind = exc.error_type if isinstance(exc, OpenAIError) else exc.error_type.title()
        return {"error": {"message": str(exc), "type": kind, "param": None, "code": exc.status}}
    return {"error": str(exc), "error_type": exc.error_type}
