"""Parse-time planning: which shards exist and which settings each step sees.

Called from workflow/rules/common.smk while Snakemake builds the DAG, so it must stay
cheap: it lists local seed files once and reads the small templates file, nothing else.
Each step gets only the slice of the config that feeds it (its "settings"), passed to the
CLI as JSON in a rule param, so a config change reruns exactly the steps it feeds.
"""

from __future__ import annotations

import copy
import functools
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from cosmopedia import hub
from cosmopedia.seeding import SCHEME as SEED_SCHEME

SEED_SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet")


class PlanError(ValueError):
    """The config does not describe a runnable set of shards."""


@dataclass(frozen=True)
class Shard:
    source: str
    name: str
    path: str  # seed file, as given (relative to the working directory), or a Hub reference

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"

    @property
    def is_hub(self) -> bool:
        """A data file of a Hub dataset (hf://datasets/...): read by its ingest job only."""
        return hub.is_ref(self.path)


def shard_name(path: str) -> str:
    name = Path(path).name
    for suffix in SEED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise PlanError(f"seed file {path!r} is not one of {', '.join(SEED_SUFFIXES)}")


def plan_shards(config: dict) -> list[Shard]:
    """One shard per seed file of every source, sorted by (source, shard).

    Local sources glob their files; Hub sources list theirs in the config (no network).
    Each source's styles or audiences are checked against the templates here, so a bad
    name or template stops the run before any job.
    """
    from cosmopedia.cli import CliError
    from cosmopedia.prompts import check_source

    shards = []
    for source, spec in sorted(config["sources"].items()):
        if ("files" in spec) == ("hub" in spec):
            which = "both" if "files" in spec else "neither"
            raise PlanError(
                f"sources.{source}: give either files (local seed files) or hub (a Hugging "
                f"Face dataset at a pinned revision), not {which}"
            )
        try:
            check_source(source, spec, config["prompts"]["templates"])
        except CliError as exc:
            raise PlanError(str(exc)) from None
        if "hub" in spec:
            paths = hub.shard_refs(spec["hub"])
        else:
            patterns = [spec["files"]] if isinstance(spec["files"], str) else spec["files"]
            paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
            if not paths:
                raise PlanError(f"sources.{source}.files: no file matches {patterns}")
        seen: dict[str, str] = {}
        for path in paths:
            name = shard_name(path)
            if "hub" in spec:  # Hub files can't be renamed: map other characters to _
                name = re.sub(r"[^A-Za-z0-9_-]", "_", name)
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise PlanError(
                    f"sources.{source}: seed file {path!r} gives the shard name {name!r}; shard "
                    "names (file names without suffix) may hold only letters, digits, _ and -"
                )
            if name in seen:
                raise PlanError(
                    f"sources.{source}: files {seen[name]!r} and {path!r} give the same shard "
                    f"name {name!r}; shard names (file names without suffix) must be unique"
                )
            seen[name] = path
            shards.append(Shard(source, name, path))
    return shards


def results_root(config: dict) -> str:
    return f"results/{config['dataset']['name']}/{config['dataset']['version']}"


def dataset_version(config: dict) -> str:
    return f"{config['dataset']['name']}/{config['dataset']['version']}"


def canonical_json(obj) -> str:
    """Stable JSON (sorted keys, no spaces): Snakemake compares params by repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4)
def _read_templates(path: str, mtime_ns: int, size: int) -> dict:
    # Keyed by mtime and size: planning reads the file once, not once per source.
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def load_family_templates(path: str, family: str) -> dict:
    stat = os.stat(path)
    templates = _read_templates(path, stat.st_mtime_ns, stat.st_size)
    if family not in templates:
        raise PlanError(f"prompt templates {path!r} have no block for seed family {family!r}")
    return copy.deepcopy(templates[family])


# --- settings of each step ---------------------------------------------------------


def ingest_settings(config: dict, source: str) -> dict:
    spec = config["sources"][source]
    settings = {
        "source": source,
        "family": spec["family"],
        "columns": spec.get("columns", {}),
        "id_column": spec.get("id_column"),
        "on_bad_rows": spec.get("on_bad_rows", "fail"),
        "max_chars": spec.get("max_chars", 1_000_000),
    }
    if "hub" in spec:
        # The file list stays out: adding a file must not rerun the other shards.
        settings["hub"] = {k: v for k, v in spec["hub"].items() if k != "data_files"}
    return settings


def ingest_shard_settings(source_settings: dict, shard: Shard, seed_sha256: str | None) -> dict:
    """One ingest job's settings: its source's (`ingest_settings`), its seed file (path or
    hf:// reference) and, for a local file, the sha256 planning saw: the job reruns exactly
    when the bytes change, and refuses a file that changed since."""
    settings = {**source_settings, "seed": shard.path}
    if seed_sha256 is not None:
        settings["seed_sha256"] = seed_sha256
    return settings


def prompts_settings(config: dict, source: str) -> dict:
    from cosmopedia import prompts as builders

    spec = config["sources"][source]
    prompts = config["prompts"]
    family_templates = builders.family_templates(prompts["templates"], spec["family"])
    return {
        "source": source,
        "family": spec["family"],
        "seed": config["seed"],
        # styles/audiences as given; the family's list defaults to all its templates.
        **builders.choice_settings(spec["family"], spec, family_templates),
        "extract_max_chars": prompts["extract_max_chars"],
        "topic_probability": prompts["topic_probability"],
        "templates": prompts["templates"],
        # Only this family's templates: editing another family's reruns nothing here.
        "templates_sha256": sha256_text(canonical_json(family_templates)),
    }


def generate_settings(config: dict) -> dict:
    return {"dataset_version": dataset_version(config), **config["generation"]}


# How generation is run, not what it produces: changing these must not regenerate a shard.
OPERATIONAL_GENERATION_KEYS = (
    "concurrency",
    "request_timeout_s",
    "max_retries",
    "backoff_base_s",
    "backoff_max_s",
    "startup_timeout_s",
    "checkpoint_every",
    "instances",
    "gpus_per_instance",
    "dummy",
)
OPERATIONAL_SERVER_KEYS = ("stop_grace_s", "fatal_log_patterns", "max_concurrent_requests")


def generate_request_settings(config: dict) -> dict:
    """The generation settings that change its results (model, revision, sampling, ...)."""
    settings = generate_settings(config)
    for key in OPERATIONAL_GENERATION_KEYS:
        settings.pop(key, None)
    settings["server"] = {
        k: v for k, v in settings.get("server", {}).items() if k not in OPERATIONAL_SERVER_KEYS
    }
    return settings


def clean_settings(config: dict) -> dict:
    return dict(config["clean"])


def minhash_settings(config: dict) -> dict:
    settings = dict(config["minhash"])
    settings.pop("index_from", None)  # input files of the buckets rule, not a setting
    return settings


def minhash_previous_indexes(config: dict) -> list[list[str]]:
    """Per bucket, the index files of the versions in `minhash.index_from` (parse time).

    An entry is a previous version's results root (its minhash/index/ is used), one of
    our index folders ({bucket}.minhash.index files) or a datatrove index folder
    (bucket_{bucket:03d}/*.minhash.index).
    """
    from cosmopedia.layout import GLOBAL_FILES

    value = config["minhash"].get("index_from")
    entries = [] if value is None else [value] if isinstance(value, str) else list(value)
    n = config["minhash"]["num_buckets"]
    own = Path(results_root(config), GLOBAL_FILES["minhash_index"]).parent.resolve()
    per_bucket: list[list[str]] = [[] for _ in range(n)]
    for entry in entries:
        folder = Path(entry, GLOBAL_FILES["minhash_index"]).parent
        folder = folder if folder.is_dir() else Path(entry)
        if folder.resolve() == own:
            raise PlanError(f"minhash.index_from: {entry!r} is this version's own index")
        name = Path(GLOBAL_FILES["minhash_index"]).name
        ours = [folder / name.format(bucket=b) for b in range(n)]
        if ours[0].is_file():
            missing = [str(p) for p in ours if not p.is_file()]
            if missing or (folder / f"{n}.minhash.index").exists():
                raise PlanError(
                    f"minhash.index_from: {folder} does not hold exactly {n} buckets "
                    f"(minhash.num_buckets); missing: {missing[:3]}"
                )
            for b in range(n):
                per_bucket[b].append(str(ours[b]))
        elif (folder / "bucket_000").is_dir():  # datatrove's layout
            for b in range(n):
                per_bucket[b] += sorted(glob.glob(f"{folder}/bucket_{b:03d}/*.minhash.index"))
        else:
            raise PlanError(
                f"minhash.index_from: {entry!r} holds no MinHash index (looked for "
                f"{ours[0]}); finish that version's minhash_buckets jobs first"
            )
    return per_bucket


def decontam_settings(config: dict) -> dict:
    settings = dict(config["decontamination"])
    settings.pop("benchmarks")  # an input file of the rule, not a setting
    return settings


def benchmark_files(config: dict) -> list[str]:
    value = config["decontamination"]["benchmarks"]
    return [value] if isinstance(value, str) else list(value)


# Key names that hold secrets (hf_token, api_key, ...), not ones like max_new_tokens.
SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_?key)$", re.IGNORECASE)


def redact_secrets(value):
    """The config with the values of secret-looking keys replaced (they never belong in it)."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if SECRET_KEY.search(k) else redact_secrets(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def project_revision(repo_dir: str) -> dict:
    """The project's git commit and whether its tree has uncommitted changes (None outside git)."""
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", "-C", repo_dir, *args], capture_output=True, text=True, timeout=30
        )

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def dataset_settings(config: dict, revision: dict) -> dict:
    resolved = redact_secrets(config)
    return {
        "name": config["dataset"]["name"],
        "version": config["dataset"]["version"],
        "license": config["dataset"]["license"],
        "families": {s: spec["family"] for s, spec in sorted(config["sources"].items())},
        "seed_scheme": SEED_SCHEME,
        "project": revision,
        # The whole resolved config (defaults filled in): enough to rebuild the version.
        "config": resolved,
        "config_sha256": sha256_text(canonical_json(resolved)),
    }
