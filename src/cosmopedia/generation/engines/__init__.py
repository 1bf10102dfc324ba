"""Engine kinds, one class per `generation.engine`, and the registry the generate step,
the planner and the workflow ask.

base.py      the interface (`Engine`), what `start` gives (`Started`, `Server`)
served.py    the base of engines whose servers the job starts (command, launcher, GPUs,
             ports, readiness, smoke request, capacity, image digest)
tgi.py, vllm.py, sglang.py, dummy.py, llamacpp.py   served engines
endpoint.py  an already running server

A new kind: a module here with its class, an entry in `ENGINES`, the name in the schema's
`generation.engine` enum and its documentation (docs/architecture.md, "Generation").
Importing this package stays cheap (planning imports it): HTTP clients load in the job.
"""

from __future__ import annotations

from cosmopedia.errors import CliError
from cosmopedia.generation.engines.base import Engine, Server, Started
from cosmopedia.generation.engines.dummy import DummyEngine
from cosmopedia.generation.engines.endpoint import EndpointEngine
from cosmopedia.generation.engines.llamacpp import LlamacppEngine
from cosmopedia.generation.engines.sglang import SglangEngine
from cosmopedia.generation.engines.tgi import TgiEngine
from cosmopedia.generation.engines.vllm import VllmEngine
from cosmopedia.settings import Generate, Generation, subschema, to_dict, validate

__all__ = ["ENGINES", "Engine", "Server", "Started", "check", "cpus", "engine_for", "gpus"]

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
    """CliError if the job's generation settings do not go together for its engine (run
    at planning and by the job; no process, no network)."""
    engine = engine_for(job.generation)
    check_foreign_sections(engine)
    engine.check()


def check_foreign_sections(engine: Engine) -> None:
    """Another engine kind's own section, set (not its defaults), would be ignored."""
    for cls in ENGINES.values():
        for name in cls.own_sections:
            if name in engine.own_sections:
                continue
            path = ("generation", name)
            given = to_dict(getattr(engine.generation, name))
            if given != validate({}, subschema(path), ".".join(path)):
                raise CliError(
                    f"generation.{name} applies to engine {cls.kind} only: engine "
                    f"{engine.kind} would ignore it"
                )


def gpus(job: Generate) -> int:
    """GPUs one generate job needs: the rule's `resources: gpu=`."""
    return engine_for(job.generation).gpus()


def cpus(job: Generate) -> int:
    """CPU cores one generate job keeps busy: the rule's `threads:`."""
    return engine_for(job.generation).cpus()
