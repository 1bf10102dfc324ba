"""Engine kinds, one class per `generation.engine`, and the registry the generate step,
the planner and the workflow ask.

base.py      the interface (`Engine`), what `start` gives (`Started`, `Server`), the
             settings every engine uses
served.py    the base of engines whose servers the job starts (command, launcher, GPUs,
             ports, readiness, smoke request, capacity, image digest)
tgi.py, vllm.py, sglang.py, dummy.py, llamacpp.py   served engines
endpoint.py  an already running server

A new kind: a module here with its class (with the settings it uses and the sampling
parameters its server reads per route), an entry in `ENGINES`, the name in the schema's
`generation.engine` enum and its documentation (docs/architecture.md, "Generation").
Importing this package stays cheap (planning imports it): HTTP clients load in the job.
"""

from __future__ import annotations

from cosmopedia import settings
from cosmopedia.errors import CliError
from cosmopedia.generation import chat_template, wire
from cosmopedia.generation.engines.base import Engine, Server, Started, common_settings, covers
from cosmopedia.generation.engines.dummy import DummyEngine
from cosmopedia.generation.engines.endpoint import EndpointEngine
from cosmopedia.generation.engines.llamacpp import LlamacppEngine
from cosmopedia.generation.engines.sglang import SglangEngine
from cosmopedia.generation.engines.tgi import TgiEngine
from cosmopedia.generation.engines.vllm import VllmEngine
from cosmopedia.settings import Generate, Generation

__all__ = [
    "ENGINES", "Engine", "Server", "Started", "check", "cpus", "engine_for", "gpus",
    "ignored_settings",
]  # fmt: skip

ENGINES: dict[str, type[Engine]] = {
    cls.kind: cls
    for cls in (DummyEngine, TgiEngine, VllmEngine, SglangEngine, LlamacppEngine, EndpointEngine)
}


def engine_for(generation: Generation) -> Engine:
    try:
        cls = ENGINES[generation.engine]
    except KeyError:
        raise CliError(
            f"generation.engine {generation.engine!r} is none of {', '.join(ENGINES)}"
        ) from None
    return cls(generation)


def check(job: Generate) -> None:
    """CliError if the job's generation settings do not go together for its engine, or if
    the engine or its route would ignore one (run at planning and by the job; no process,
    no network). The message names the key."""
    engine = engine_for(job.generation)
    problems = ignored_settings(engine)
    if problems:
        raise CliError("\n".join(problems))
    engine.check()
    if job.generation.chat_template not in (None, chat_template.SERVER):
        try:  # a template file the client renders: readable, and it renders
            engine.chat_template()
        except chat_template.ChatTemplateError as exc:
            raise CliError(f"generation.{exc}") from None


def ignored_settings(engine: Engine) -> list[str]:
    """Why each setting the engine or its route would ignore is refused, key by key:

    * a setting whose value is not its default, outside the engine's `settings_used` or
      left unused by its configuration (`unused_settings`);
    * the protocol, if the engine's server does not read its fields (`generation.api`);
    * the route itself, if the engine does not serve it (`generation.api`);
    * a sampling parameter that is not null and that the route's server does not read.
    """
    g = engine.generation
    kind = engine.kind
    problems = []
    unused = engine.unused_settings()
    used = common_settings() | engine.settings_used
    for key in settings.changed_settings(g):
        if covers(used, key) and not covers(frozenset(unused), key):
            continue
        why = next((w for name, w in unused.items() if covers(frozenset({name}), key)), None)
        if why is None:
            users = [k for k, cls in ENGINES.items() if covers(cls.settings_used, key)]
            if len(users) > 1:
                why = f"only engines {', '.join(users)} use it"
            else:
                why = f"only engine {users[0]} uses it" if users else "no engine uses it"
        problems.append(f"generation.{key}: engine {kind} would ignore it ({why}); remove it")

    if engine.api not in engine.apis:
        problems.append(
            f"generation.api: engine {kind}'s server does not read protocol {engine.api}'s "
            f"fields (it speaks {', '.join(sorted(engine.apis))}); remove it"
        )
        return problems
    table = engine.sampling_table()
    path = engine.route_path()
    read = table.get(path)
    if read is None:
        served = ", ".join(f"{p} ({route_choice(engine, p)})" for p in table)
        problems.append(
            f"generation.api: engine {kind} does not serve {path} (api {engine.api}); "
            f"it serves {served}"
        )
        return problems
    why = engine.sampling_why.get(path)
    for name in wire.SAMPLING:
        if getattr(g.sampling, name) is None or name in read:
            continue
        others = [f"{p} ({route_choice(engine, p)})" for p, r in table.items() if name in r]
        problems.append(
            f"generation.sampling.{name}: engine {kind}'s {path} would drop it"
            + (f" ({why})" if why else "")
            + "; set it to null (not sent)"
            + (f", or use {' or '.join(others)}" if others else "")
        )
    return problems


def route_choice(engine: Engine, path: str) -> str:
    """How the config chooses route `path` of `engine`, for the messages."""
    if path == wire.CHAT:
        return "chat_template: server"
    # The engine's own protocol if it is the one of this route, else the route's usual one.
    api = next(
        a for a in (engine.default_api, *wire.APIS) if wire.route_path(a, chat_server=False) == path
    )
    return f"api {api}, chat_template null or a template the client renders"


def gpus(job: Generate) -> int:
    """GPUs one generate job needs: the rule's `resources: gpu=`."""
    return engine_for(job.generation).gpus()


def cpus(job: Generate) -> int:
    """CPU cores one generate job keeps busy: the rule's `threads:`."""
    return engine_for(job.generation).cpus()
