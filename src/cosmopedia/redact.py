"""Secrets never leave the process: the one redaction used for configs, commands,
environments, URLs and log text before anything is written, recorded or printed.

What counts as a secret: the values of environment variables whose names look secret
(HF_TOKEN, *_API_KEY, ...; at least 8 characters, so `1` or `true` are left alone),
values of keys or flags named like secrets (`api_key:`, `--token=`), and credentials in
URLs (`https://user:pw@host`, `?api_key=...`). A leaf module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

MARKER = "***"
# Names (environment variables, config keys) whose values are secrets.
SECRET_NAME_RE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.IGNORECASE)
# Config keys: the whole key is a secret's name (hf_token, api_key), not max_new_tokens.
SECRET_KEY_RE = re.compile(r"(^|_)(token|secret|password|passwd|api_?key)$", re.IGNORECASE)
SECRET_FLAG_RE = re.compile(r"^--?(?:api[-_]?key|token|hf[-_]token|password|secret)(=|$)", re.I)
URL_USERINFO_RE = re.compile(r"(\w+://)[^/@\s]+@")
# A query parameter named like a secret: ?api_key=..., &token=...
URL_QUERY_SECRET_RE = re.compile(
    r"([?&](?:[\w.-]*(?:token|secret|password|passwd|api_?key|key|sig|signature)[\w.-]*)=)[^&#\s]*",
    re.IGNORECASE,
)
MIN_SECRET_CHARS = 8
# Secret variables that huggingface_hub and the engines read, always treated as secrets.
KNOWN_SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of this process's secret-looking environment variables, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        v
        for k, v in environ.items()
        if v and (k in KNOWN_SECRET_VARS or (SECRET_NAME_RE.search(k) and len(v) >= 8))
    }
    return sorted(values, key=len, reverse=True)


def text(value: str, extra: Iterable[str] = ()) -> str:
    """`value` with secret values, URL credentials and secret query parameters masked."""
    for secret in [*secret_values(), *extra]:
        if secret:
            value = value.replace(secret, MARKER)
    value = URL_USERINFO_RE.sub(rf"\1{MARKER}@", value)
    return URL_QUERY_SECRET_RE.sub(rf"\1{MARKER}", value)


def args(command: Iterable[str]) -> list[str]:
    """A command line without secrets: values of secret flags, secret values, credentials."""
    out: list[str] = []
    hide_next = False
    for arg in command:
        if hide_next:
            out.append(MARKER)
            hide_next = False
            continue
        match = SECRET_FLAG_RE.match(arg)
        if match:
            if match.group(1) == "=":
                out.append(arg.split("=", 1)[0] + "=" + MARKER)
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(text(arg))
    return out


def env(variables: Mapping[str, str]) -> dict[str, str]:
    """An environment as recorded: secret-named variables masked, other values redacted."""
    return {k: MARKER if SECRET_NAME_RE.search(k) else text(str(v)) for k, v in variables.items()}


def config(value):
    """A config (nested dicts and lists) with secret keys' values and secrets in strings masked."""
    if isinstance(value, Mapping):
        return {
            k: MARKER if SECRET_KEY_RE.search(str(k)) and v is not None else config(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [config(v) for v in value]
    if isinstance(value, str):
        return text(value)
    return value
