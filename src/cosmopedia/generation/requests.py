"""One row's request and what becomes of it: its seed and key, how a failure is
classified (retried or not), the backoff between attempts, and the row's result record.

Each row gets a seed derived from (dataset version, row id) (`cosmopedia.seeding`); its
key hashes everything that determines the request, so a checkpointed row is reused only
while the key still matches. Failures are retried by error class with seeded, jittered
exponential backoff (`probes.backoff_s`, shared with the smoke request).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import httpx2
import polars as pl
from huggingface_hub import errors

from cosmopedia import redact, settings
from cosmopedia.generation.routes import EngineHTTPError

# The columns each row gets in the generations shard.
RESULT_SCHEMA = {
    "text": pl.String,
    "text_token_length": pl.Int64,
    "finish_reason": pl.String,
    "seed": pl.Int64,
    "attempts": pl.Int64,
    "error": pl.String,
}
ERROR_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Request:
    id: str
    prompt: str  # as sent (the chat template applied, if the client applies it)
    seed: int
    key: str
    # Sendings of this row in earlier runs (a failed row sent again): its record counts
    # every attempt.
    prior_attempts: int = 0


def request_fields(
    model: str, revision: str, sampling: settings.Sampling, context: dict | None = None
) -> dict:
    """What every row's request of a shard shares (its key hashes them with the prompt and
    seed). `context` (the route and chat template, when not TGI's /generate with raw
    prompts) joins only when set, so keys of plain requests stay the same."""
    fields = {"model": model, "revision": revision, "sampling": settings.to_dict(sampling)}
    if context:
        fields["context"] = context
    return fields


def key_of(prompt: str, seed: int, fields: dict) -> str:
    """The key of the request of `prompt` with `seed` and the shared `fields`."""
    payload = json.dumps(
        {"prompt": prompt, "seed": seed, **fields}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def request_key(
    prompt: str,
    seed: int,
    model: str,
    revision: str,
    sampling: settings.Sampling,
    context: dict | None = None,
) -> str:
    """Identifies a request: a checkpointed row is reused only if its key still matches."""
    return key_of(prompt, seed, request_fields(model, revision, sampling, context))


def _by_status(status: int) -> tuple[str, bool]:
    if status == 429:
        return "overloaded", True
    if status in (400, 422):
        return "validation", False
    if status == 503:
        return "unavailable", True
    return f"http_{status}", status >= 500


def classify(exc: Exception) -> tuple[str, bool] | None:
    """(cause, transient) for a failed request, or None if it is not a request failure."""
    if isinstance(exc, errors.ValidationError):
        return "validation", False
    if isinstance(exc, errors.OverloadedError):
        return "overloaded", True
    # TGI reports CUDA OOM of a request as a generation error: another batch may fit.
    if isinstance(exc, errors.GenerationError):
        return "generation", True
    if isinstance(exc, errors.IncompleteGenerationError):
        return "incomplete_generation", True
    if isinstance(exc, errors.InferenceTimeoutError | httpx2.TimeoutException):
        return "timeout", True
    if isinstance(exc, httpx2.TransportError):
        return "connection", True
    if isinstance(exc, EngineHTTPError):
        return _by_status(exc.status)
    # Other HTTP errors: the status sits on the error or on the HTTP error it wraps.
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return _by_status(status)
    return None


def record(
    request: Request,
    attempts: int,
    *,
    text: str | None = None,
    tokens: int | None = None,
    finish_reason: str = "error",
    error: str | None = None,
    transient: bool = False,
) -> dict:
    """The row's result, as the checkpoint keeps it (the RESULT_SCHEMA columns, id, key)."""
    return {
        "id": request.id,
        "key": request.key,
        "text": text,
        "text_token_length": tokens,
        "finish_reason": finish_reason,
        "seed": request.seed,
        "attempts": attempts,
        "error": error,
        "transient": transient,
    }


def failure_record(request: Request, attempts: int, exc: Exception, cause: str, transient: bool):
    """The record of a row whose retries ran out (or whose failure is not transient). Its
    message is redacted: an error may quote the URL, with its query parameters."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = redact.text(message)
    return record(
        request,
        attempts,
        error=f"{cause}: {message[:ERROR_MESSAGE_CHARS]}",
        transient=transient,
    )


def failure_cause(result: dict) -> str | None:
    """Why a row counts as failed in the shard report; the row stays in the output."""
    if result["error"] is not None:
        return result["error"].split(":", 1)[0]
    if result["finish_reason"] == "length":
        return "length"  # cut at max_new_tokens: an unfinished text
    if not (result["text"] or "").strip():
        return "empty_text"
    return None
