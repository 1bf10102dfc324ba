"""How a job starts its engine servers: command templates, GPU subsets, ports, provenance.

A server command is `launcher prefix + program + engine arguments + extra_args`, with
placeholders (`{port}`, `{model}`, ...) filled per instance. The launcher runs the program
natively, in an Apptainer image or through Slurm's pyxis/enroot (`srun --container-image`).
Each instance gets its own GPU subset (`CUDA_VISIBLE_DEVICES`), HTTP port, distributed-init
port (TGI `--master-port`, SGLang `--nccl-port`), TGI metrics port and shard socket path,
so several servers share a node without clashing.

The engine facts encoded here (flag names, routes, fatal start-up messages) are those of
text-generation-inference 3.x, vLLM (`vllm serve`) and SGLang (`sglang.launch_server`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cosmopedia.engines.sidecar import PLACEHOLDER_RE, free_port, secret_values

SIDECAR_ENGINES = ("dummy", "tgi", "vllm", "sglang")
GPU_ENGINES = ("tgi", "vllm", "sglang")
LAUNCHERS = ("native", "apptainer", "pyxis")
# The client protocol each engine speaks unless `api` says otherwise.
DEFAULT_API = {
    "dummy": "tgi",
    "tgi": "tgi",
    "endpoint": "tgi",
    "vllm": "openai",
    "sglang": "openai",
}

PROGRAMS = {
    "tgi": ["text-generation-launcher"],
    "vllm": ["vllm", "serve"],
    "sglang": ["python", "-m", "sglang.launch_server"],
}
ARGUMENTS = {
    "tgi": [
        "--model-id", "{model}",
        "--revision", "{revision}",
        "--num-shard", "{num_shard}",
        "--hostname", "{host}",
        "--port", "{port}",
        "--master-port", "{master_port}",
        "--shard-uds-path", "{shard_uds_path}",
        "--prometheus-port", "{prometheus_port}",
        "--max-concurrent-requests", "{max_concurrent_requests}",
        "--max-input-tokens", "{max_input_tokens}",
        "--max-total-tokens", "{max_total_tokens}",
        "--usage-stats", "off",
    ],
    "vllm": [
        "{model}",
        "--revision", "{revision}",
        "--served-model-name", "{model}",
        "--host", "{host}",
        "--port", "{port}",
        "--tensor-parallel-size", "{num_shard}",
        "--max-model-len", "{max_total_tokens}",
    ],
    "sglang": [
        "--model-path", "{model}",
        "--revision", "{revision}",
        "--served-model-name", "{model}",
        "--host", "{host}",
        "--port", "{port}",
        "--nccl-port", "{master_port}",
        "--tp-size", "{num_shard}",
        "--context-length", "{max_total_tokens}",
    ],
}  # fmt: skip

# Log lines after which a server never becomes healthy: abort at once, not at the deadline.
FATAL_PATTERNS = {
    "dummy": [r"^FATAL\b"],
    "tgi": [
        r"ShardCannotStart",
        r"WebserverFailed",
        r"Shard \d+ failed to start",
        r"DownloadError",
        r"CUDA out of memory",
        r"OutOfMemoryError",
    ],
    "vllm": [
        r"Engine core initialization failed",
        r"CUDA out of memory",
        r"OutOfMemoryError",
        r"No available memory for the cache blocks",
    ],
    "sglang": [
        r"Scheduler hit an exception",
        r"CUDA out of memory",
        r"OutOfMemoryError",
        r"Received sigquit from a child process",
    ],
}

PLACEHOLDERS = frozenset(
    {
        "host", "port", "model", "revision", "num_shard", "gpus", "instance", "master_port",
        "prometheus_port", "shard_uds_path", "max_concurrent_requests", "max_input_tokens",
        "max_total_tokens", "image",
    }
)  # fmt: skip
# Flags whose value is a secret, and environment variables whose values are.
SECRET_FLAG_RE = re.compile(r"^--?(?:api[-_]?key|token|hf[-_]token|password|secret)(=|$)", re.I)
SECRET_NAME_RE = re.compile(r"TOKEN|SECRET|PASSWORD|API_?KEY|CREDENTIAL", re.I)
URL_CREDENTIALS_RE = re.compile(r"(\w+://)[^/@\s]+@")
REDACTED = "***"
# The job's own Python, as recorded: no absolute paths of this machine in provenance.
RECORDED_PYTHON = "python"


class LaunchError(ValueError):
    """The launch settings cannot give a working server command."""


def unknown_placeholders(args: list[str]) -> list[str]:
    return sorted({m for arg in args for m in PLACEHOLDER_RE.findall(arg)} - PLACEHOLDERS)


def dummy_command(settings: dict) -> list[str]:
    """The dummy engine (no placeholders but host and port; simulation flags when set)."""
    dummy = settings["dummy"]
    command = [
        sys.executable,
        "-m",
        "cosmopedia.cli",
        "serve-dummy",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--model-id",
        settings["model"],
        "--latency-per-token",
        str(dummy["latency_per_token_s"]),
        "--max-concurrent",
        str(dummy["max_concurrent"]),
    ]
    if dummy["max_batch"] is not None:
        command += ["--max-batch", str(dummy["max_batch"])]
    faults = dummy["faults"]
    flags = {
        "--fault-seed": faults["seed"],
        "--fault-429": faults["rate_429"],
        "--fault-503": faults["rate_503"],
        "--fault-reset": faults["rate_reset"],
        "--fault-hang": faults["rate_hang"],
        "--crash-after": faults["crash_after"],
    }
    if any(v for k, v in flags.items() if k != "--fault-seed"):
        for flag, value in flags.items():
            command += [flag, str(value)]
    return command


def launcher_prefix(server: dict) -> list[str]:
    launcher = server["launcher"]
    mounts = server["mounts"]
    if launcher == "native":
        return list(server["launcher_args"])
    if launcher == "apptainer":
        binds = [arg for mount in mounts for arg in ("--bind", mount)]
        return ["apptainer", "exec", "--nv", *binds, *server["launcher_args"], "{image}"]
    # pyxis: a job step in the job's allocation, sharing its GPUs (--overlap). Slurm sets
    # CUDA_VISIBLE_DEVICES of a step to all of the job's GPUs: `env` narrows it inside.
    container = ["--container-image={image}"]
    if mounts:
        container.append("--container-mounts=" + ",".join(mounts))
    return [
        "srun", "--overlap", "--nodes=1", "--ntasks=1", *container, *server["launcher_args"],
        "env", "CUDA_VISIBLE_DEVICES={gpus}",
    ]  # fmt: skip


def command_template(settings: dict) -> list[str]:
    """The server command with placeholders, as run (and, redacted, as recorded)."""
    engine = settings["engine"]
    if engine == "dummy":
        return dummy_command(settings)
    if engine not in GPU_ENGINES:
        raise LaunchError(f"engine {engine!r} runs no server in the job")
    server = settings["server"]
    program = server["program"] or PROGRAMS[engine]
    return [*launcher_prefix(server), *program, *ARGUMENTS[engine], *server["extra_args"]]


def check_server_settings(settings: dict) -> None:
    """Errors a job would otherwise meet only after queueing for GPUs."""
    engine, server = settings["engine"], settings["server"]
    if engine == "dummy" and (server["launcher"] != "native" or server["program"]):
        raise LaunchError("server.launcher and server.program apply to tgi, vllm and sglang")
    if server["launcher"] != "native" and not server["image"]:
        raise LaunchError(f"server.launcher {server['launcher']} needs server.image")
    if engine in GPU_ENGINES:
        unknown = unknown_placeholders(command_template(settings))
        if unknown:
            raise LaunchError(
                f"unknown placeholders in the server command: {unknown}; "
                f"known: {sorted(PLACEHOLDERS)}"
            )
    if engine in GPU_ENGINES and server["max_input_tokens"] >= server["max_total_tokens"]:
        raise LaunchError("server.max_input_tokens must be < server.max_total_tokens")
    if engine in GPU_ENGINES and (
        settings["sampling"]["max_new_tokens"] >= server["max_total_tokens"]
    ):
        raise LaunchError("sampling.max_new_tokens must be < server.max_total_tokens")
    for name in server["env"]:
        if SECRET_NAME_RE.search(name):
            raise LaunchError(
                f"server.env.{name}: secrets stay in the job's environment (the engine "
                "inherits it), never in the config, which is logged and recorded"
            )


@dataclass
class InstancePlan:
    """One server of the job: its GPUs, placeholder values, environment and log prefix."""

    index: int
    gpus: list[str] | None
    values: dict
    env: dict[str, str]
    prefix: str
    scratch: list[str] = field(default_factory=list)  # path prefixes to clean up after


def split_gpus(settings: dict, visible: str | None) -> list[list[str] | None]:
    """Each instance's devices: consecutive slices of the job's CUDA_VISIBLE_DEVICES."""
    instances, per = settings["instances"], settings["gpus_per_instance"]
    need = instances * per
    if visible is not None and visible.strip():
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    elif settings["engine"] in GPU_ENGINES:
        devices = [str(i) for i in range(need)]  # a node outside Slurm: all GPUs visible
    else:
        devices = []
    if len(devices) < need:
        if settings["engine"] in GPU_ENGINES:
            raise LaunchError(
                f"the job sees {len(devices)} GPU(s) (CUDA_VISIBLE_DEVICES={visible}) but "
                f"instances x gpus_per_instance = {instances} x {per} = {need}"
            )
        return [None] * instances  # the dummy needs no GPU
    return [devices[i * per : (i + 1) * per] for i in range(instances)]


def plan_instances(
    settings: dict, visible: str | None = None, tmp_root: str = "/tmp"
) -> list[InstancePlan]:
    """Per-instance values for the command template, with fresh ports and socket paths."""
    server = settings["server"]
    job_tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    plans = []
    for index, gpus in enumerate(split_gpus(settings, visible)):
        uds = f"{tmp_root}/cosmopedia-{job_tag}-{index}"
        values = {
            "model": settings["model"],
            "revision": settings["revision"],
            "num_shard": settings["gpus_per_instance"],
            "gpus": ",".join(gpus or []),
            "instance": index,
            "master_port": free_port(),
            "prometheus_port": free_port(),
            "shard_uds_path": uds,
            "max_concurrent_requests": server["max_concurrent_requests"],
            "max_input_tokens": server["max_input_tokens"],
            "max_total_tokens": server["max_total_tokens"],
            "image": server["image"] or "",
        }
        env = {str(k): str(v) for k, v in server["env"].items()}
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        prefix = f"[{index}] " if settings["instances"] > 1 else ""
        plans.append(InstancePlan(index, gpus, values, env, prefix, scratch=[uds]))
    return plans


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


def fatal_patterns(settings: dict) -> list[str]:
    configured = settings["server"]["fatal_log_patterns"]
    return list(FATAL_PATTERNS[settings["engine"]] if configured is None else configured)


# --- provenance ------------------------------------------------------------------------------


def redact(args: list[str]) -> list[str]:
    """`args` without secrets: token values, values of secret flags, URL credentials."""
    values = set(secret_values())
    values |= {v for k, v in os.environ.items() if SECRET_NAME_RE.search(k) and len(v) >= 8}
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        match = SECRET_FLAG_RE.match(arg)
        if match:
            if match.group(1) == "=":
                out.append(arg.split("=", 1)[0] + "=" + REDACTED)
            else:
                out.append(arg)
                hide_next = True
            continue
        for value in values:
            arg = arg.replace(value, REDACTED)
        out.append(URL_CREDENTIALS_RE.sub(rf"\1{REDACTED}@", arg))
    return out


def recorded(args: list[str]) -> list[str]:
    """A command as provenance records it: redacted, this machine's Python as `python`."""
    return redact([RECORDED_PYTHON if arg == sys.executable else arg for arg in args])


def recorded_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if SECRET_NAME_RE.search(k) else redact([v])[0]) for k, v in env.items()}


def _sha256_file(path: str, chunk_size: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def image_record(settings: dict) -> dict | None:
    """The container image: its name (no directories) and digest, when known.

    `server.image_digest`: "auto" hashes an image file (an Apptainer .sif, a squashfs for
    pyxis) or takes the digest pinned in a reference (`...@sha256:<hex>`); a literal
    "sha256:<hex>" is recorded as given; null records none. Hashing a multi-GB .sif takes
    seconds to a minute: the job does it while the engine loads.
    """
    server = settings["server"]
    image = server["image"]
    if settings["engine"] not in GPU_ENGINES or server["launcher"] == "native" or not image:
        return None
    spec = server["image_digest"]
    digest = None
    if spec is not None and spec != "auto":
        digest = spec
    elif spec == "auto":
        pinned = re.search(r"@(sha256:[0-9a-f]{64})", image)
        if pinned:
            digest = pinned.group(1)
        elif os.path.isfile(image):
            digest = f"sha256:{_sha256_file(image)}"
    name = Path(image).name if os.path.isfile(image) else image
    return {"name": name, "digest": digest}
