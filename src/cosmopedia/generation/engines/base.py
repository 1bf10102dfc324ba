"""The engine interface: everything the generate step asks of an engine kind.

An `Engine` is built from the job's `settings.Generation`. The runner asks it, and never
the kind's name: which settings go together (`check`), which settings it uses
(`settings_used`, `unused_settings`) and which sampling parameters its server reads on
each route (`sampling_table`), how many GPUs and CPU cores a job needs (`gpus`, the rule's
`resources: gpu=`; `cpus`, its `threads:`), how exactly a rerun repeats its texts
(`determinism`, recorded), which of its server settings change texts (`key_settings`,
part of every request key), which client protocol it speaks by default (`api`), which
token the client sends (`token`), which chat template prompts go through
(`chat_template`, `find_chat_template`), which route the client uses (`route`), how to
start (or find) its servers and what provenance records about them (`start`).

A setting the engine or its route would ignore is refused before any job
(`engines.check`): each engine declares the settings it uses, and a setting outside them
that differs from its default is an error naming it. Sampling parameters are values, not
switches (`top_k: 50` is a choice): each one that is not null must be read by the route.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cosmopedia import redact, settings
from cosmopedia.generation import chat_template, wire
from cosmopedia.settings import Generation

if TYPE_CHECKING:
    import httpx2

    from cosmopedia.generation.routes import Route
    from cosmopedia.generation.sidecar import Sidecar

# Sent as the bearer token to the job's own servers: the job's HF token has no business
# there (huggingface_hub would otherwise send it to any URL).
NO_TOKEN = "EMPTY"


@functools.cache
def common_settings() -> frozenset[str]:
    """The settings of `generation` every engine uses: those the schema does not mark
    x-engine-specific (a name covers its keys: "sampling" is sampling.*). The route
    decides about each sampling parameter (`sampling_table`)."""
    node = settings.subschema(("generation",))
    return frozenset(node["properties"]) - settings.engine_specific(node)


def covers(names: frozenset[str], key: str) -> bool:
    """Whether the dotted `key` is one of `names` or inside one ("server" covers server.env)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts) + 1))


@dataclass
class Server:
    """One engine server as the client sees it: where, how many requests it takes at once,
    and what provenance records about it (`record`, one item of `instances`)."""

    index: int
    url: str
    capacity: int
    record: dict
    sidecar: Sidecar | None = None  # the process, when the job runs the server

    def exited(self) -> str | None:
        """Why the server is gone, or None while it runs (or when the job does not run it)."""
        if self.sidecar is None or self.sidecar.alive():
            return None
        code = self.sidecar.process.returncode
        return f"exited (code {code}); see {self.sidecar.log_path}"


@dataclass
class Started:
    """What `Engine.start` gives: the servers, and the engine's provenance record
    (kind, api, endpoint_url, command, info, image)."""

    servers: list[Server]
    record: dict


class Engine:
    """One kind of engine (`generation.engine`); subclasses set `kind` and register in
    `cosmopedia.generation.engines.ENGINES`."""

    kind: ClassVar[str] = ""
    # The client protocol (`routes.py`) unless `generation.api` says otherwise.
    default_api: ClassVar[str] = "tgi"
    # The x-engine-specific settings of `generation` this engine uses, besides
    # `common_settings()` (dotted names: "server" is all of server.*, "server.env" one
    # key); `unused_settings` takes out those its configuration leaves unused.
    settings_used: ClassVar[frozenset[str]] = frozenset()
    # The client protocols (`generation.api`, wire.APIS) whose field names its server
    # reads; which of their routes it serves is `sampling_read`'s.
    apis: ClassVar[frozenset[str]] = frozenset({"tgi", "openai"})
    # Route -> the sampling parameters its server reads there (wire.py); a route absent is
    # not served. `sampling_table` may choose by configuration (an endpoint's api).
    sampling_read: ClassVar[dict[str, frozenset[str]]] = wire.EVERY_ROUTE
    # Why a route reads fewer parameters, for the error message.
    sampling_why: ClassVar[dict[str, str]] = {}
    # True for a server the job does not run: the client then follows the environment's
    # proxy settings and sends the job's HF token.
    external: ClassVar[bool] = False
    # How exactly a fresh run repeats the texts: recorded in the provenance, and the
    # manifest's `determinism`.
    determinism: ClassVar[str] = (
        "engine-dependent: seeded sampling, but continuous batching can change logits; "
        "reuse cached generations for exact rebuilds"
    )

    def __init__(self, generation: Generation):
        self.generation = generation

    @property
    def api(self) -> str:
        return self.generation.api or self.default_api

    def check(self) -> None:
        """Raise CliError for settings that do not go together for this engine. Runs at
        planning and in the job: cheap, no process, no network. (Types and bounds of each
        key are the schema's job; settings the engine ignores are `engines.check`'s.)"""

    def unused_settings(self) -> dict[str, str]:
        """Settings among `settings_used` that this configuration leaves unused: dotted key
        -> why (a setting outside `settings_used` needs no entry; given one, its reason is
        the one the refusal names)."""
        g = self.generation
        if g.chat_template in (None, chat_template.SERVER):
            shown = "null" if g.chat_template is None else repr(g.chat_template)
            why = f"only a chat template the client renders uses it; chat_template: {shown}"
            return {"chat_template_tokens": why}
        return {}

    def route_path(self) -> str:
        """The route every request of the job goes to (wire.py)."""
        return wire.route_path(self.api, self.generation.chat_template == chat_template.SERVER)

    def sampling_table(self) -> dict[str, frozenset[str]]:
        """Route -> the sampling parameters the server reads there (routes it serves)."""
        return self.sampling_read

    def chat_template(self) -> chat_template.ChatTemplate:
        """The template prompts go through (chat_template.ChatTemplateError if unusable)."""
        g = self.generation
        tokens = g.chat_template_tokens
        return chat_template.load_chat_template(
            g.chat_template,
            g.model,
            g.revision,
            find=self.find_chat_template,
            bos_token=tokens.bos,
            eos_token=tokens.eos,
        )

    def gpus(self) -> int:
        """GPUs one generate job needs (the rule's `resources: gpu=`)."""
        return 0

    def cpus(self) -> int:
        """CPU cores one generate job keeps busy (the rule's `threads:`): the client's."""
        return 1

    def key_settings(self) -> dict | None:
        """Server settings that change the texts beyond model, revision and sampling: part
        of every request key, so that a checkpoint of other settings is not reused."""
        return None

    def token(self) -> str | None:
        """The bearer token the client sends."""
        return NO_TOKEN

    def find_chat_template(self, model: str, revision: str) -> tuple[str | None, str | None]:
        """(text, where) of the template the engine applies with `chat_template: server`,
        for the record; (None, None) if it cannot be found locally."""
        return chat_template.find_model_template(model, revision)

    def route(self, chat_server: bool) -> type[Route]:
        """The client route of every request (`chat_server`: the engine applies the chat
        template)."""
        from cosmopedia.generation import routes  # httpx2 and huggingface_hub: in jobs only

        return routes.route_class(self.api, chat_server)

    def make_route(self, chat_server: bool, base_url: str, http: httpx2.AsyncClient) -> Route:
        g = self.generation
        args = (base_url, g.model, g.sampling, self.token(), g.request_timeout_s)
        return self.route(chat_server).make(*args, api=self.api, http=http)

    def start(self, engine_log: str, stack: contextlib.ExitStack) -> Started:
        """Start the servers (or find the running one); `stack` stops them. CliError if
        they cannot serve."""
        raise NotImplementedError

    def record(self) -> dict:
        """The provenance fields of every engine."""
        url = self.generation.endpoint_url
        return {
            "kind": self.kind,
            "api": self.api,
            "endpoint_url": redact.text(url) if url else None,
            "determinism": self.determinism,
        }
