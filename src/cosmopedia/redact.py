"""Secrets never leave the process: the one redaction used for configs, commands,
environments, URLs and log text before anything is written, recorded or printed.

What counts as a secret: the values of environment variables whose names look secret
(HF_TOKEN, *_API_KEY, ...; at least 8 characters, so `1` or `true` are left alone),
values of keys or flags named like secrets (`api_key:`, `--token=`), and credentials in
URLs (`https://user:pw@host`, `?api_key=...`).

Credentials in `generation.endpoint_url` never reach a file or a command line: planning
moves them out of the URL (`split_url`) into the environment variable
COSMOPEDIA_ENDPOINT_CREDENTIALS of the Snakemake process, which its jobs inherit (and
which every Slurm job sets again when it parses the workflow); the job reads them back
(`endpoint_access`) and sends the userinfo as HTTP Basic auth and the secret query
parameters with every request. The variable may also be set by hand to the endpoint's URL
with its credentials, which keeps them out of config files altogether. A leaf module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MARKER = "***"
# Names (environment variables, config keys) whose values are secrets.
SECRET_NAME_RE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.IGNORECASE)
# Config keys: the whole key is a secret's name (hf_token, api_key), not max_new_tokens.
SECRET_KEY_RE = re.compile(r"(^|_)(token|secret|password|passwd|api_?key)$", re.IGNORECASE)
SECRET_FLAG_RE = re.compile(r"^--?(?:api[-_]?key|token|hf[-_]token|password|secret)(=|$)", re.I)
URL_USERINFO_RE = re.compile(r"(\w+://)[^/@\s]+@")
# The name of a query parameter that holds a secret: api_key, token, sig, X-Amz-Signature...
QUERY_SECRET_NAME = r"[\w.-]*(?:token|secret|password|passwd|api_?key|key|sig|signature)[\w.-]*"
QUERY_SECRET_NAME_RE = re.compile(rf"{QUERY_SECRET_NAME}", re.IGNORECASE)
# A query parameter named like a secret: ?api_key=..., &token=...
URL_QUERY_SECRET_RE = re.compile(rf"([?&](?:{QUERY_SECRET_NAME})=)[^&#\s]*", re.IGNORECASE)
MIN_SECRET_CHARS = 8
# Secret variables that huggingface_hub and the engines read, always treated as secrets.
KNOWN_SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")
# Where planning puts the credentials of generation.endpoint_url (JSON, see
# `UrlCredentials`), and the bearer token of an endpoint (else the HF token is sent).
ENDPOINT_CREDENTIALS_VAR = "COSMOPEDIA_ENDPOINT_CREDENTIALS"
ENDPOINT_TOKEN_VAR = "COSMOPEDIA_ENDPOINT_TOKEN"


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of this process's secret-looking environment variables, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        v
        for k, v in environ.items()
        if v and (k in KNOWN_SECRET_VARS or (SECRET_NAME_RE.search(k) and len(v) >= 8))
    }
    # The endpoint's credentials, one by one (the variable holds them as JSON).
    credentials = UrlCredentials.from_env_value(environ.get(ENDPOINT_CREDENTIALS_VAR))
    if credentials is not None:
        values |= {v for v in credentials.values() if len(v) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def text(value: str, extra: Iterable[str] = ()) -> str:
    """`value` with secret values, URL credentials and secret query parameters masked."""
    for secret in [*secret_values(), *extra]:
        if secret:
            value = value.replace(secret, MARKER)
    value = URL_USERINFO_RE.sub(rf"\1{MARKER}@", value)
    return URL_QUERY_SECRET_RE.sub(rf"\1{MARKER}", value)


class Formatter(logging.Formatter):
    """A log formatter whose lines (tracebacks included) pass through `text`: the one the
    `cosmopedia` command's log uses, so no job log holds a secret."""

    def format(self, record: logging.LogRecord) -> str:
        return text(super().format(record))


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


# --- credentials in URLs --------------------------------------------------------------------


@dataclass(frozen=True)
class UrlCredentials:
    """The credentials of a URL, apart from it: `url` is the URL without them, `username`
    and `password` its userinfo (`https://user:password@host`, percent-decoded; None
    without userinfo), `query` its query parameters named like secrets (decoded). They
    travel as JSON in ENDPOINT_CREDENTIALS_VAR, bound to `url`: a job whose endpoint is
    another URL does not send them."""

    url: str
    username: str | None = None
    password: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return self.username is not None or bool(self.query)

    def values(self) -> list[str]:
        """The secret values, for `secret_values`: the password and the query values."""
        return [v for v in (self.password, *(value for _, value in self.query)) if v]

    def to_json(self) -> str:
        return json.dumps(
            {
                "url": self.url,
                "username": self.username,
                "password": self.password,
                "query": [list(q) for q in self.query],
            }
        )

    @classmethod
    def from_env_value(cls, value: str | None) -> UrlCredentials | None:
        """The credentials of ENDPOINT_CREDENTIALS_VAR: the JSON planning writes, or the
        endpoint's URL with its credentials (set by hand, to keep them out of config files);
        None if unset or not readable."""
        if not value:
            return None
        if value.startswith(("http://", "https://")):
            return split_url(value)
        try:
            data = json.loads(value)
            query = tuple((str(k), str(v)) for k, v in data.get("query") or ())
            user, password = data.get("username"), data.get("password")
            return cls(
                str(data["url"]),
                None if user is None else str(user),
                None if password is None else str(password),
                query,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def split_url(url: str) -> UrlCredentials:
    """`url` without its credentials (userinfo, query parameters named like secrets), and
    those credentials. Other query parameters and their encoding stay as given."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    kept, secret = [], []
    for item in parts.query.split("&") if parts.query else []:
        name, _, value = item.partition("=")
        name = urllib.parse.unquote_plus(name)
        if QUERY_SECRET_NAME_RE.fullmatch(name):
            secret.append((name, urllib.parse.unquote_plus(value)))
        else:
            kept.append(item)
    if not (at or secret):
        return UrlCredentials(url)
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = urllib.parse.unquote(user)
        password = urllib.parse.unquote(pw) if colon else None
    clean = urllib.parse.urlunsplit(
        (parts.scheme, host, parts.path, "&".join(kept), parts.fragment)
    )
    return UrlCredentials(clean, username, password, tuple(secret))


@dataclass(frozen=True)
class EndpointAccess:
    """How the job's client reaches an endpoint: `base_url` (no query: routes append their
    paths to it), the query parameters of every request (the URL's own, then the secret
    ones), and the (user, password) of HTTP Basic auth the URL's userinfo means, if any."""

    base_url: str
    params: tuple[tuple[str, str], ...] = ()
    basic_auth: tuple[str, str] | None = None


def endpoint_access(url: str, environ: Mapping[str, str] | None = None) -> EndpointAccess:
    """The access to endpoint `url` (as planning left it, without credentials), with the
    credentials planning moved to ENDPOINT_CREDENTIALS_VAR if they belong to this URL.
    Credentials still in `url` (a step run by hand) are used as well."""
    environ = os.environ if environ is None else environ
    own = split_url(url)
    moved = UrlCredentials.from_env_value(environ.get(ENDPOINT_CREDENTIALS_VAR))
    if moved is None or moved.url != own.url:
        moved = UrlCredentials(own.url)
    parts = urllib.parse.urlsplit(own.url)
    params = [
        (urllib.parse.unquote_plus(k), urllib.parse.unquote_plus(v))
        for k, _, v in (item.partition("=") for item in parts.query.split("&") if item)
    ]
    params += [*own.query, *moved.query]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    userinfo = own if own.username is not None else moved
    basic = None
    if userinfo.username is not None:
        basic = (userinfo.username, userinfo.password or "")
    return EndpointAccess(base.rstrip("/"), tuple(params), basic)
