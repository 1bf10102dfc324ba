"""Parse-time planning: which shards exist and which settings each step sees.

Called from workflow/rules/common.smk while Snakemake builds the DAG, so it must stay
cheap: it lists local seed files once and reads the small templates file, nothing else.
Each step gets only the slice of the config that feeds it (its "settings"), passed to the
CLI as JSON in a rule param, so a config change reruns exactly the steps it feeds.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from cosmopedia.seeding import SCHEME as SEED_SCHEME

SEED_SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet")


class PlanError(ValueError):
    """The config does not describe a runnable set of shards."""


@dataclass(frozen=True)
class Shard:
    source: str
    name: str
    path: str  # seed file, as given (relative to the working directory)

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"


def shard_name(path: str) -> str:
    name = Path(path).name
    for suffix in SEED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise PlanError(f"seed file {path!r} is not one of {', '.join(SEED_SUFFIXES)}")


def plan_shards(config: dict) -> list[Shard]:
    """One shard per seed file of every source, sorted by (source, shard)."""
    shards = []
    for source, spec in sorted(config["sources"].items()):
        patterns = [spec["files"]] if isinstance(spec["files"], str) else spec["files"]
        paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
        if not paths:
            raise PlanError(f"sources.{source}.files: no file matches {patterns}")
        seen: dict[str, str] = {}
        for path in paths:
            name = shard_name(path)
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


def load_family_templates(path: str, family: str) -> dict:
    with open(path, encoding="utf-8") as f:
        templates = yaml.safe_load(f) or {}
    if family not in templates:
        raise PlanError(f"prompt templates {path!r} have no block for seed family {family!r}")
    return templates[family]


# --- settings of each step ---------------------------------------------------------


def ingest_settings(config: dict, source: str) -> dict:
    spec = config["sources"][source]
    return {
        "source": source,
        "family": spec["family"],
        "columns": spec.get("columns", {}),
        "id_column": spec.get("id_column"),
    }


def prompts_settings(config: dict, source: str) -> dict:
    spec = config["sources"][source]
    prompts = config["prompts"]
    family_templates = load_family_templates(prompts["templates"], spec["family"])
    return {
        "source": source,
        "family": spec["family"],
        "seed": config["seed"],
        "styles": spec.get("styles"),
        "audiences": spec.get("audiences"),
        "extract_max_chars": prompts["extract_max_chars"],
        "topic_probability": prompts["topic_probability"],
        "templates": prompts["templates"],
        # Only this family's templates: editing another family's reruns nothing here.
        "templates_sha256": sha256_text(canonical_json(family_templates)),
    }


def generate_settings(config: dict) -> dict:
    return {"dataset_version": dataset_version(config), **config["generation"]}


def clean_settings(config: dict) -> dict:
    return dict(config["clean"])


def minhash_settings(config: dict) -> dict:
    return dict(config["minhash"])


def decontam_settings(config: dict) -> dict:
    settings = dict(config["decontamination"])
    settings.pop("benchmarks")  # an input file of the rule, not a setting
    return settings


def benchmark_files(config: dict) -> list[str]:
    value = config["decontamination"]["benchmarks"]
    return [value] if isinstance(value, str) else list(value)


def dataset_settings(config: dict) -> dict:
    return {
        "name": config["dataset"]["name"],
        "version": config["dataset"]["version"],
        "license": config["dataset"]["license"],
        "families": {s: spec["family"] for s, spec in sorted(config["sources"].items())},
        "seed_scheme": SEED_SCHEME,
        "steps": {
            "clean": clean_settings(config),
            "minhash": minhash_settings(config),
            "decontamination": decontam_settings(config),
            "generation": generate_settings(config),
        },
    }
