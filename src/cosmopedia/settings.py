"""Typed settings of every step: frozen dataclasses built once from the validated config.

The config schema (`cosmopedia/schemas/config.schema.yaml`, shipped with the package) is
the one list of keys, types, bounds and defaults. A *section* dataclass mirrors one object
of the schema (tests/test_settings.py checks that its fields are exactly the schema's
properties); a *job* dataclass is what one step's job receives: sections plus facts of the
job (its source, seed file, dataset version). Both travel as JSON (`--settings`), and the
CLI turns that JSON back into the same dataclass through `load`, which validates the
sections against their part of the schema: a step run by hand is checked like the workflow.

Schema annotations used here:
  x-operational: true   how a step runs, not what it produces (concurrency, timeouts,
                        retries...): changing it reruns no job (see `result_affecting`).
  x-planning: true      read while planning (file lists, input files), not by the jobs.
  x-presets: {name: {key: value}}   on a section with a `preset` key: the values a preset
                        gives the keys the config leaves out (see `apply_presets`).
  x-engine-specific: true   a generation key only some engines use (`engine_specific`);
                        each engine class lists those it uses, the others refuse it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from cosmopedia import yamlfile
from cosmopedia.errors import CliError
from cosmopedia.jsonvalues import is_int, is_number

SCHEMA_FILE = "schemas/config.schema.yaml"
OPERATIONAL = "x-operational"
PLANNING = "x-planning"
PRESETS = "x-presets"
ENGINE_SPECIFIC = "x-engine-specific"


# --- the schema and validation -------------------------------------------------------------


def schema_path() -> str:
    """The schema file inside the installed package (Snakemake and tools read it by path)."""
    return str(resources.files("cosmopedia").joinpath(SCHEMA_FILE))


@functools.cache
def schema() -> dict:
    with open(schema_path(), encoding="utf-8") as f:
        return yamlfile.parse(f.read(), schema_path())


def subschema(path: tuple[str, ...]) -> dict:
    """The schema of the config object at `path`; "*" stands for any source name."""
    node = schema()
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node


@functools.cache
def _validator_class():
    import jsonschema

    base = jsonschema.Draft202012Validator
    # JSON Schema counts 8.0 as an integer (a count or size given as 8.0 is a typo here),
    # booleans as numbers, and NaN passes every bound: cosmopedia.jsonvalues says no.
    checker = base.TYPE_CHECKER.redefine_many(
        {"integer": lambda _, v: is_int(v), "number": lambda _, v: is_number(v)}
    )
    fill_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        # Defaults are filled before the properties are validated (as Snakemake's validate
        # does), so a default object is itself completed and checked.
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from fill_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(
        base, {"properties": properties_with_defaults}, type_checker=checker
    )


def validate(instance: Any, node: dict, where: str) -> Any:
    """`instance` checked against the schema `node`, defaults filled in (a new object).

    The first error names the key (`where.key.sub`), the rule broken and the value.
    """
    import jsonschema

    instance = copy.deepcopy(instance)
    validator = _validator_class()(node)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        key = ".".join([where, *(str(p) for p in error.absolute_path)]).strip(".")
        raise CliError(f"{key or 'config'}: {error.message}")
    return instance


def validate_config(config: dict) -> dict:
    """The whole config checked against the schema, presets and defaults filled in."""
    return validate(apply_presets(config, schema()), schema(), "")


def apply_presets(config: dict, node: dict) -> dict:
    """A copy of `config` where each section with a `preset` (schema: x-presets) has the
    preset's values for the keys it leaves out; keys it gives win. The rest of the defaults
    come from the schema afterwards, so the resolved config (and the manifest) shows every
    value a preset chose."""
    config = copy.deepcopy(config)
    if not isinstance(config, dict):
        return config
    for key, sub in node.get("properties", {}).items():
        presets = sub.get(PRESETS)
        part = config.get(key)
        if not presets or not isinstance(part, dict):
            continue
        name = part.get("preset", sub["properties"]["preset"]["default"])
        for name_key, value in presets.get(name, {}).items():
            part.setdefault(name_key, copy.deepcopy(value))
    return config


def result_affecting(value: dict, node: dict) -> dict:
    """`value` without its x-operational keys (recursively): what changes results."""
    props = node.get("properties", {})
    out = {}
    for key, sub in value.items():
        spec = props.get(key, {})
        if spec.get(OPERATIONAL):
            continue
        out[key] = result_affecting(sub, spec) if isinstance(sub, dict) and spec else sub
    return out


def leaves(value: dict, node: dict, prefix: str = "") -> dict[str, Any]:
    """`value`'s settings by dotted key: objects of the schema with `properties` are
    descended into, anything else (a scalar, a list, a free-form mapping) is one setting."""
    out = {}
    props = node.get("properties", {})
    for key, sub in value.items():
        spec = props.get(key, {})
        if isinstance(sub, dict) and "properties" in spec:
            out |= leaves(sub, spec, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = sub
    return out


def changed_settings(section) -> dict[str, Any]:
    """The settings of a section dataclass whose value is not the schema's default, by
    dotted key (a key of a free-form mapping such as `server.env` counts as a change)."""
    node = subschema(section.SCHEMA_PATH)
    defaults = leaves(validate({}, node, ".".join(section.SCHEMA_PATH)), node)
    return {
        key: value
        for key, value in leaves(to_dict(section), node).items()
        if key not in defaults or value != defaults[key]
    }


def engine_specific(node: dict) -> frozenset[str]:
    """The properties of a schema object marked x-engine-specific."""
    return frozenset(k for k, v in node.get("properties", {}).items() if v.get(ENGINE_SPECIFIC))


def job_keys(node: dict) -> list[str]:
    """The properties of a schema object that jobs receive (not the x-planning ones)."""
    return [k for k, v in node.get("properties", {}).items() if not v.get(PLANNING)]


@functools.cache
def job_schema(path: tuple[str, ...]) -> dict:
    """The schema of the config object at `path` without its x-planning keys: what a
    job's settings of that object must match."""
    node = copy.deepcopy(subschema(path))
    keys = job_keys(node)
    node["properties"] = {k: v for k, v in node.get("properties", {}).items() if k in keys}
    if "required" in node:
        node["required"] = [k for k in node["required"] if k in keys]
    return node


# --- dataclasses from JSON -----------------------------------------------------------------


def _build(tp, value, where: str):
    """`value` (parsed JSON) as type `tp`: nested dataclasses, tuples, mappings, scalars."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _build(option, value, where)
            except CliError as exc:
                problems.append(str(exc))
        raise CliError(problems[0] if len(problems) == 1 else f"{where}: unexpected {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise CliError(f"{where}: expected a list, got {value!r}")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_build(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise CliError(f"{where}: expected an object, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return types.MappingProxyType(
            {str(k): _build(value_tp, v, f"{where}.{k}") for k, v in value.items()}
        )
    if tp is Any:
        return value
    ok = {
        str: lambda v: isinstance(v, str),
        bool: lambda v: isinstance(v, bool),
        int: is_int,
        float: is_number,
    }[tp](value)
    if not ok:
        kind = {str: "a string", bool: "true/false", int: "an integer", float: "a number"}[tp]
        raise CliError(f"{where}: expected {kind}, got {value!r}")
    return value


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def from_dict(cls, data, where: str = "--settings"):
    """An instance of dataclass `cls` from parsed JSON: sections are validated against
    their schema first (defaults filled); every key must be a field and every field given."""
    schema_node = getattr(cls, "SCHEMA_PATH", None)
    if schema_node is not None:
        data = validate(data, job_schema(schema_node), where)
    if not isinstance(data, dict):
        raise CliError(f"{where}: expected an object, got {data!r}")
    names = _field_names(cls)
    if unknown := sorted(set(data) - set(names)):
        raise CliError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if missing := [n for n in names if n not in data and n not in _optional(cls)]:
        raise CliError(f"{where}: missing key(s) {', '.join(missing)}")
    hints = _hints(cls)
    return cls(**{n: _build(hints[n], data[n], f"{where}.{n}") for n in names if n in data})


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _optional(cls) -> frozenset[str]:
    """Fields that may be absent from the JSON: those with the default None."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.default is None)


def to_dict(obj) -> Any:
    """JSON-ready form of a settings dataclass (tuples as lists, mappings as dicts)."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.default is None and getattr(obj, f.name) is None)
        }
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def canonical_json(obj) -> str:
    """Stable JSON (sorted keys, no spaces): Snakemake compares params by their text."""
    if dataclasses.is_dataclass(obj):
        obj = to_dict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load(cls, value: str):
    """A step's `--settings`: JSON, or @path of a JSON/YAML file (to run a step by hand)."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--settings {value}: {exc}") from exc
        if path.suffix in (".yaml", ".yml"):
            data = yamlfile.parse(text, path) or {}
        else:
            data = _json(text, f"--settings {value}")
    else:
        data = _json(value, "--settings")
    return from_dict(cls, data)


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where} is not valid JSON: {exc}") from exc


# --- sections: one per schema object -------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    SCHEMA_PATH: ClassVar = ("generation", "dummy", "faults")
    seed: int
    rate_429: float
    rate_503: float
    rate_reset: float
    rate_hang: float
    crash_after: int


@dataclass(frozen=True)
class Dummy:
    SCHEMA_PATH: ClassVar = ("generation", "dummy")
    latency_per_token_s: float
    max_concurrent: int
    max_batch: int | None
    faults: Faults


@dataclass(frozen=True)
class Server:
    SCHEMA_PATH: ClassVar = ("generation", "server")
    max_concurrent_requests: int
    max_input_tokens: int
    max_total_tokens: int
    launcher: str
    image: str | None
    image_digest: str | None
    mounts: tuple[str, ...]
    launcher_args: tuple[str, ...]
    program: tuple[str, ...] | None
    extra_args: tuple[str, ...]
    env: Mapping[str, str | int | float | bool]
    fatal_log_patterns: tuple[str, ...] | None
    stop_grace_s: float


@dataclass(frozen=True)
class Sampling:
    SCHEMA_PATH: ClassVar = ("generation", "sampling")
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int | None  # None: not sent
    repetition_penalty: float | None  # None: not sent


@dataclass(frozen=True)
class ChatTemplateTokens:
    SCHEMA_PATH: ClassVar = ("generation", "chat_template_tokens")
    bos: str  # the template's bos_token
    eos: str  # its eos_token


@dataclass(frozen=True)
class Llamacpp:
    SCHEMA_PATH: ClassVar = ("generation", "llamacpp")
    model_file: str | None
    threads: int
    n_ubatch: int
    last_n_tokens_size: int
    interrupt_requests: bool


@dataclass(frozen=True)
class Generation:
    SCHEMA_PATH: ClassVar = ("generation",)
    engine: str
    api: str | None
    endpoint_url: str | None
    model: str
    revision: str
    chat_template: str | None
    chat_template_tokens: ChatTemplateTokens
    instances: int
    gpus_per_instance: int
    concurrency: int
    request_timeout_s: float
    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    startup_timeout_s: float
    checkpoint_every: int
    retry_failed: bool
    server: Server
    sampling: Sampling
    llamacpp: Llamacpp
    dummy: Dummy


@dataclass(frozen=True)
class Clean:
    SCHEMA_PATH: ClassVar = ("clean",)
    min_tokens: int
    boilerplate_openers: tuple[str, ...]
    strip: bool
    token_count: str
    count_special_tokens: bool


@dataclass(frozen=True)
class Minhash:
    SCHEMA_PATH: ClassVar = ("minhash",)
    n_grams: int
    num_buckets: int
    hashes_per_bucket: int
    seed: int
    precision: int
    hash_fc: str
    normalization: str
    tokenizer: str
    bucket_jobs: int


@dataclass(frozen=True)
class Decontamination:
    SCHEMA_PATH: ClassVar = ("decontamination",)
    ngram: int
    threshold: float
    min_block_chars: int
    report_all_matches: bool


# --- jobs: what one step's job receives ----------------------------------------------------


@dataclass(frozen=True)
class HubDataset:
    """A Hub seed dataset at its pinned revision (its file list stays with the plan)."""

    SCHEMA_PATH: ClassVar = ("sources", "*", "hub")
    repo_id: str
    revision: str
    config_name: str | None
    split: str


@dataclass(frozen=True)
class Ingest:
    source: str
    family: str
    columns: Mapping[str, str]
    id_column: str | None
    on_bad_rows: str
    max_chars: int
    # Absent from the JSON when None (a local file, a Hub file): the settings of planned
    # jobs keep their text, so nothing reruns for a change of representation.
    hub: HubDataset | None = None
    seed: str | None = None  # the seed file: a path, or an hf://datasets/... reference
    seed_sha256: str | None = None  # a local file's sha256 when planned (ingest checks it)
    # True when the source's template set keeps seed text as given (seed_fields: verbatim).
    verbatim: bool | None = None
    # A row range of the seed file (sources.<name>.rows_per_shard, cosmopedia.rowranges):
    # rows [row_start, row_stop) of it; row ids carry `file_shard`, the file's own shard
    # name, so they are the same whatever the split.
    row_start: int | None = None
    row_stop: int | None = None
    file_shard: str | None = None
    # A local file's range digest when planned (ingest checks it, as seed_sha256).
    rows_sha256: str | None = None
    # The file's rows when planned, given to the job of its last range: that job checks
    # that no row follows (a Hub file's count comes from the config).
    file_rows: int | None = None


@dataclass(frozen=True)
class Prompts:
    source: str
    family: str
    seed: int  # the config's seed: salt of the per-row random choices
    styles: tuple[str, ...] | None
    audiences: tuple[str, ...] | None
    fan_out: str  # one (a style drawn per seed unit) | all (every style, the set's order)
    seed_data: str  # the seed_data label of the source's rows
    extract_max_chars: int
    topic_probability: float
    template_set: str | None  # the set's name (None for the `prompts` family)
    templates: str | None  # the set's file
    variant: str | None  # the family's variant in the set
    templates_sha256: str


@dataclass(frozen=True)
class TokenizerFile:
    """The tokenizer.json planning found: a configured path (`path`) or, with `path` None,
    the Hub cache's file of `model` at `revision`; the job checks its sha256."""

    path: str | None
    model: str
    revision: str
    sha256: str


@dataclass(frozen=True)
class CleanJob:
    clean: Clean
    tokenizer: TokenizerFile | None  # None: text_token_length stays the engine's count


@dataclass(frozen=True)
class Generate:
    dataset_version: str  # with the row id, it derives each row's seed
    generation: Generation


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    license: str
    configs: Mapping[str, str]  # source -> the dataset config holding its rows
    seed_scheme: str
    project: Mapping[str, Any]
    config: Mapping[str, Any]
    config_sha256: str


# Every dataclass that mirrors a part of the schema (tests/test_settings.py checks them).
SECTIONS = (
    Faults, Dummy, Server, Sampling, ChatTemplateTokens, Llamacpp, Generation, Clean,
    Minhash, Decontamination, HubDataset,
)  # fmt: skip
