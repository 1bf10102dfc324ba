"""The engine interface: everything the generate step asks of an engine kind.

An `Engine` is built from the job's `settings.Generation`. The runner asks it, and never
the kind's name: which settings go together (`check`), how many GPUs and CPU cores a job
needs (`gpus`, the rule's `resources: gpu=`; `cpus`, its `threads:`), how exactly a rerun
repeats its texts (`determinism`, recorded), which of its server settings change texts
(`key_settings`, part of every request key), which client protocol it speaks by default
(`api`), which token the client sends (`token`), where the model's chat template is
(`find_chat_template`), which route the client uses (`route`), how to start (or find) its
servers and what provenance records about them (`start`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cosmopedia import redact
from cosmopedia.generation import chat_template
from cosmopedia.settings import Generation

if TYPE_CHECKING:
    import httpx2

    from cosmopedia.generation.routes import Route
    from cosmopedia.generation.sidecar import Sidecar

# Sent as the bearer token to the job's own servers: the job's HF token has no business
# there (huggingface_hub would otherwise send it to any URL).
NO_TOKEN = "EMPTY"


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
    # True for a server the job does not run: the client then follows the environment's
    # proxy settings and sends the job's HF token.
    external: ClassVar[bool] = False
    # Sections of `generation` that only this kind reads: set for another engine, they
    # are refused (`engines.check`).
    own_sections: ClassVar[tuple[str, ...]] = ()
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
        key are the schema's job.)"""

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
