# Shared helpers of the rules: config validation, the shard plan, per-step settings and
# input functions. Everything here runs at parse time (also inside every Slurm job), so
# it stays cheap: one glob per source and one read of the small templates file.
import os

from snakemake.utils import validate

from cosmopedia import fingerprint, layout, plan


validate(config, schema="../schemas/config.schema.yaml")

try:
    SHARDS = plan.plan_shards(config)
except plan.PlanError as exc:
    raise WorkflowError(f"config: {exc}") from None

ROOT = plan.results_root(config)
SHARD_BY_KEY = {s.key: s for s in SHARDS}
SOURCES = sorted(config["sources"])
BUCKETS = list(range(config["minhash"]["num_buckets"]))
LOGS = f"{ROOT}/logs"
BENCHMARKS = f"{ROOT}/benchmarks"


wildcard_constraints:
    source="[a-z0-9_]+",
    shard="[A-Za-z0-9_-]+",
    bucket="[0-9]+",


def out(stage):
    """Output pattern of a per-shard stage (wildcards source, shard)."""
    return layout.shard_pattern(ROOT, stage)


def all_shards(stage):
    """The files of a per-shard stage for every planned shard."""
    return [layout.shard_path(ROOT, stage, s.source, s.name) for s in SHARDS]


# Seed content hashes (cached by size and mtime): ingest reruns when bytes change, not mtimes.
SEED_SHA256 = fingerprint.fingerprints(
    [s.path for s in SHARDS], ".snakemake/cosmopedia/seed_fingerprints.json"
)


def seed_file(wildcards):
    return ancient(SHARD_BY_KEY[f"{wildcards.source}/{wildcards.shard}"].path)


def seed_sha256(wildcards):
    return SEED_SHA256[SHARD_BY_KEY[f"{wildcards.source}/{wildcards.shard}"].path]


def settings(payload):
    """Step settings as the canonical JSON string the CLI takes (compared by repr)."""
    return plan.canonical_json(payload)


def ingest_settings(wildcards):
    return settings(plan.ingest_settings(config, wildcards.source))


# Templates are read once here; each prompts job sees only its own family's hash.
PROMPTS_SETTINGS = {source: settings(plan.prompts_settings(config, source)) for source in SOURCES}


def prompts_settings(wildcards):
    return PROMPTS_SETTINGS[wildcards.source]


def shard_plan_entries():
    return [
        {
            "source": s.source,
            "shard": s.name,
            "family": config["sources"][s.source]["family"],
            "seed_file": s.path,
        }
        for s in SHARDS
    ]


def signature_args(wildcards, input):
    """KEY=DIR pairs of every shard's signature folder, in plan order."""
    return " ".join(f"{s.key}={d}" for s, d in zip(SHARDS, input.signatures))


def print_summary():
    summary = layout.global_path(ROOT, "summary")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            print("\n" + f.read(), end="")


def remove_file(wildcards, input):
    """This shard's removal list inside the cluster job's folder (one file per shard)."""
    return f"{input.removals}/{wildcards.source}/{wildcards.shard}.remove"
