"""Engines whose servers the job starts itself, as sidecars: the shared base of tgi, vllm,
sglang and the dummy.

A server command is `launcher prefix + program + engine arguments + extra_args`, with
placeholders (`{port}`, `{model}`, ...) filled per instance. The launcher runs the program
natively, in an Apptainer image or through Slurm's pyxis/enroot (`srun --container-image`).
Each instance gets its own GPU subset (`CUDA_VISIBLE_DEVICES`), HTTP port, distributed-init
port (TGI `--master-port`, SGLang `--nccl-port`), TGI metrics port and shard socket path,
so several servers share a node without clashing. All instances start in parallel under
one deadline (`sidecar.running`), each is ready when its readiness probe passes, and one
smoke request must succeed; the capacity of each is `max_concurrent_requests` from its
/info, else the value the job configured.

A subclass names its program, arguments and fatal log lines, and may change any step:
`gpu_use`, `placeholder_values`, `base_env`, `ready`, `smoke_request`, `capacity`, `check`. It uses
every `server` setting, but those its command or launcher leaves out (`unused_settings`):
an image, its digest and mounts with the native launcher, a token limit whose placeholder
the command lacks (vLLM and SGLang take no `max_input_tokens`), GPUs for a CPU engine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cosmopedia import redact, settings
from cosmopedia.errors import CliError
from cosmopedia.generation import probes
from cosmopedia.generation.engines.base import Engine, Server, Started
from cosmopedia.generation.sidecar import (
    PLACEHOLDER_RE,
    Sidecar,
    SidecarError,
    free_port,
    running,
)
from cosmopedia.hashing import sha256_file
from cosmopedia.jsonvalues import is_int

log = logging.getLogger(__name__)

# Placeholders every served engine's command may use (`placeholder_values` fills them).
PLACEHOLDERS = frozenset(
    {
        "host", "port", "model", "revision", "num_shard", "gpus", "instance", "master_port",
        "prometheus_port", "shard_uds_path", "max_concurrent_requests", "max_input_tokens",
        "max_total_tokens", "image",
    }
)  # fmt: skip
# The job's own Python, as recorded: no absolute paths of this machine in provenance.
RECORDED_PYTHON = "python"
HASH_CHUNK_BYTES = 1 << 24


@dataclass
class InstancePlan:
    """One server of the job: its GPUs, placeholder values, environment and log prefix."""

    index: int
    gpus: list[str] | None
    values: dict
    env: dict[str, str]
    prefix: str
    scratch: list[str] = field(default_factory=list)  # path prefixes to clean up after


class ServedEngine(Engine):
    """An engine whose servers (`generation.instances` of them) the job starts."""

    # The program and its arguments (placeholders in braces), before server.extra_args;
    # server.program replaces the program.
    program: ClassVar[tuple[str, ...]] = ()
    arguments: ClassVar[tuple[str, ...]] = ()
    # Log lines after which a server never becomes healthy: abort at once, not at the
    # deadline (server.fatal_log_patterns replaces them).
    fatal_log_patterns: ClassVar[tuple[str, ...]] = ()
    # "required": instances x gpus_per_instance GPUs, asked for by the rule and checked in
    # the job; "optional": slices of the devices the job happens to see, if enough (the
    # dummy standing in for a GPU engine); "none": a CPU engine.
    gpu_use: ClassVar[str] = "required"
    placeholders: ClassVar[frozenset[str]] = PLACEHOLDERS
    settings_used = frozenset({"gpus_per_instance", "server"})
    # Settings that reach the server only through their placeholder in the command.
    placeholder_settings: ClassVar[dict[str, str]] = {
        "server.max_input_tokens": "max_input_tokens",
        "server.max_total_tokens": "max_total_tokens",
    }

    # --- settings -----------------------------------------------------------------------

    def check(self) -> None:
        self.check_launcher()
        self.check_placeholders()
        self.check_token_limits()
        self.check_env()

    def unused_settings(self) -> dict[str, str]:
        unused = super().unused_settings()
        server = self.generation.server
        used = {m for arg in self.command_template() for m in PLACEHOLDER_RE.findall(arg)}
        for key, placeholder in self.placeholder_settings.items():
            if placeholder not in used:
                unused[key] = f"the {self.kind} command has no {{{placeholder}}}"
        if server.launcher == "native":
            for key in ("server.mounts", "server.image_digest"):
                unused[key] = "server.launcher native runs no image"
            if "image" not in used:
                unused["server.image"] = "server.launcher native runs no image"
        if self.gpu_use == "none":
            unused["gpus_per_instance"] = f"engine {self.kind} runs on CPUs"
        return unused

    def check_launcher(self) -> None:
        server = self.generation.server
        if server.launcher != "native" and not server.image:
            raise CliError(f"generation.server.launcher {server.launcher} needs server.image")

    def check_placeholders(self) -> None:
        used = {m for arg in self.command_template() for m in PLACEHOLDER_RE.findall(arg)}
        if unknown := sorted(used - self.placeholders):
            raise CliError(
                f"generation.server: unknown placeholders in the server command: {unknown}; "
                f"known: {sorted(self.placeholders)}"
            )

    def check_token_limits(self) -> None:
        g = self.generation
        unused = self.unused_settings()
        if "server.max_total_tokens" in unused:
            return
        if (
            "server.max_input_tokens" not in unused
            and g.server.max_input_tokens >= g.server.max_total_tokens
        ):
            raise CliError("generation.server.max_input_tokens must be < server.max_total_tokens")
        if g.sampling.max_new_tokens >= g.server.max_total_tokens:
            raise CliError("generation.sampling.max_new_tokens must be < server.max_total_tokens")

    def check_env(self) -> None:
        for name in self.generation.server.env:
            if redact.SECRET_NAME_RE.search(name):
                raise CliError(
                    f"generation.server.env.{name}: secrets stay in the job's environment "
                    "(the engine inherits it), never in the config, which is logged and recorded"
                )

    def gpus(self) -> int:
        if self.gpu_use != "required":
            return 0
        return self.generation.instances * self.generation.gpus_per_instance

    # --- the command ----------------------------------------------------------------------

    def command_template(self) -> list[str]:
        """The server command with placeholders, as run (and, redacted, as recorded)."""
        server = self.generation.server
        program = server.program or self.program
        return [*launcher_prefix(server), *program, *self.arguments, *server.extra_args]

    def fatal_patterns(self) -> list[str]:
        configured = self.generation.server.fatal_log_patterns
        return list(self.fatal_log_patterns if configured is None else configured)

    # --- instances ------------------------------------------------------------------------

    def split_gpus(self, visible: str | None) -> list[list[str] | None]:
        """Each instance's devices: consecutive slices of the job's CUDA_VISIBLE_DEVICES."""
        g = self.generation
        instances, per = g.instances, g.gpus_per_instance
        need = instances * per
        if self.gpu_use == "none":
            return [None] * instances
        if visible is not None and visible.strip():
            devices = [d.strip() for d in visible.split(",") if d.strip()]
        elif self.gpu_use == "required":
            devices = [str(i) for i in range(need)]  # a node outside Slurm: all GPUs visible
        else:
            devices = []
        if len(devices) < need:
            if self.gpu_use == "required":
                raise CliError(
                    f"the job sees {len(devices)} GPU(s) (CUDA_VISIBLE_DEVICES={visible}) but "
                    f"instances x gpus_per_instance = {instances} x {per} = {need}"
                )
            return [None] * instances
        return [devices[i * per : (i + 1) * per] for i in range(instances)]

    def placeholder_values(self, index: int, gpus: list[str] | None, scratch: str) -> dict:
        """The placeholders of instance `index` but host and port (the sidecar's)."""
        g = self.generation
        return {
            "model": g.model,
            "revision": g.revision,
            "num_shard": g.gpus_per_instance,
            "gpus": ",".join(gpus or []),
            "instance": index,
            "master_port": free_port(),
            "prometheus_port": free_port(),
            "shard_uds_path": scratch,
            "max_concurrent_requests": g.server.max_concurrent_requests,
            "max_input_tokens": g.server.max_input_tokens,
            "max_total_tokens": g.server.max_total_tokens,
            "image": g.server.image or "",
        }

    def plan_instances(self, visible: str | None, tmp_root: str = "/tmp") -> list[InstancePlan]:
        """Per-instance values for the command template, with fresh ports and socket paths."""
        g = self.generation
        job_tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        plans = []
        for index, gpus in enumerate(self.split_gpus(visible)):
            scratch = f"{tmp_root}/cosmopedia-{job_tag}-{index}"
            env = {str(k): str(v) for k, v in g.server.env.items()}
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            prefix = f"[{index}] " if g.instances > 1 else ""
            values = self.placeholder_values(index, gpus, scratch)
            plans.append(InstancePlan(index, gpus, values, env, prefix, scratch=[scratch]))
        return plans

    # --- start-up -------------------------------------------------------------------------

    def ready(self, base_url: str) -> bool:
        """The readiness probe during start-up."""
        return probes.health(base_url)

    def base_env(self) -> dict[str, str] | None:
        """The environment the servers' `env` is added to; None: the job's own."""
        return None

    def smoke_request(self) -> Callable[[str], None] | None:
        """One request each server must answer before the shard starts (None: none),
        retried as the rows' requests are, with another seed per attempt."""
        g = self.generation
        retries = probes.Retries(
            g.max_retries, g.backoff_base_s, g.backoff_max_s, g.request_timeout_s
        )
        return probes.smoke_request(self.api, g.model, retries)

    def capacity(self, info: dict | None) -> int:
        """Requests one server takes at once: its /info says, else the configured value."""
        value = (info or {}).get("max_concurrent_requests")
        if is_int(value) and value >= 1:
            return value
        return self.default_capacity()

    def default_capacity(self) -> int:
        """The capacity of a server whose /info does not say (vLLM, SGLang queue requests)."""
        return self.generation.server.max_concurrent_requests

    def image_record(self) -> dict | None:
        """The container image: its name (no directories) and digest, when known.

        `server.image_digest`: "auto" hashes an image file (an Apptainer .sif, a squashfs
        for pyxis) or takes the digest pinned in a reference (`...@sha256:<hex>`); a
        literal "sha256:<hex>" is recorded as given; null records none. Hashing a multi-GB
        .sif takes seconds to a minute: the job does it while the engine loads.
        """
        server = self.generation.server
        image = server.image
        if server.launcher == "native" or not image:
            return None
        spec = server.image_digest
        digest = None
        if spec is not None and spec != "auto":
            digest = spec
        elif spec == "auto":
            pinned = re.search(r"@(sha256:[0-9a-f]{64})", image)
            if pinned:
                digest = pinned.group(1)
            elif os.path.isfile(image):
                digest = f"sha256:{sha256_file(image, HASH_CHUNK_BYTES)}"
        name = Path(image).name if os.path.isfile(image) else image
        return {"name": name, "digest": digest}

    def _image_or_name(self) -> dict | None:
        try:
            return self.image_record()
        except OSError as exc:
            log.warning("cannot hash the image: %s", exc)
            return {"name": self.generation.server.image, "digest": None}

    def start(self, engine_log: str, stack: contextlib.ExitStack) -> Started:
        g = self.generation
        template = self.command_template()
        plans = self.plan_instances(os.environ.get("CUDA_VISIBLE_DEVICES"))
        stack.callback(cleanup_scratch, plans)
        sidecars = [
            Sidecar(
                template,
                engine_log,
                startup_timeout_s=g.startup_timeout_s,
                grace_s=g.server.stop_grace_s,
                smoke=self.smoke_request(),
                ready=self.ready,
                values=plan.values,
                env=plan.env,
                prefix=plan.prefix,
                fatal_patterns=self.fatal_patterns(),
                base_env=self.base_env(),
            )
            for plan in plans
        ]
        pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1))
        image = pool.submit(self._image_or_name)
        try:
            stack.enter_context(running(sidecars, g.startup_timeout_s))
        except SidecarError as exc:
            raise CliError(str(exc)) from exc
        record = self.record() | {
            "command": recorded(template),
            "info": sidecars[0].info,
            "image": image.result(),
        }
        servers = []
        for plan, sidecar in zip(plans, sidecars, strict=True):
            capacity = self.capacity(sidecar.info)
            instance = {
                "index": plan.index,
                "url": sidecar.url,
                "gpus": plan.gpus,
                "capacity": capacity,
                "startup_s": round(sidecar.startup_s, 3),
                "command": recorded(sidecar.command),
                "env": redact.env(plan.env),
            }
            servers.append(Server(plan.index, sidecar.url, capacity, instance, sidecar))
        return Started(servers, record)


def launcher_prefix(server: settings.Server) -> list[str]:
    """What runs the program: nothing (native), `apptainer exec` or `srun` with pyxis."""
    launcher = server.launcher
    mounts = server.mounts
    if launcher == "native":
        return list(server.launcher_args)
    if launcher == "apptainer":
        binds = [arg for mount in mounts for arg in ("--bind", mount)]
        return ["apptainer", "exec", "--nv", *binds, *server.launcher_args, "{image}"]
    # pyxis: a job step in the job's allocation, sharing its GPUs (--overlap). Slurm sets
    # CUDA_VISIBLE_DEVICES of a step to all of the job's GPUs: `env` narrows it inside.
    container = ["--container-image={image}"]
    if mounts:
        container.append("--container-mounts=" + ",".join(mounts))
    return [
        "srun", "--overlap", "--nodes=1", "--ntasks=1", *container, *server.launcher_args,
        "env", "CUDA_VISIBLE_DEVICES={gpus}",
    ]  # fmt: skip


def recorded(args: list[str]) -> list[str]:
    """A command as provenance records it: redacted, this machine's Python as `python`."""
    return redact.args([RECORDED_PYTHON if arg == sys.executable else arg for arg in args])


def cleanup_scratch(plans: list[InstancePlan]) -> None:
    """Remove leftover shard sockets (`<prefix>-<rank>`) of stopped servers."""
    for plan in plans:
        for prefix in plan.scratch:
            parent, name = os.path.split(prefix)
            try:
                entries = os.listdir(parent or ".")
            except OSError:
                continue
            for entry in entries:
                if entry == name or entry.startswith(f"{name}-"):
                    path = os.path.join(parent, entry)
                    try:
                        if os.path.isdir(path) and not os.path.islink(path):
                            continue
                        os.unlink(path)
                    except OSError:
                        pass
