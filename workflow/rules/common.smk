# Shared helpers of the rules: config validation, the shard plan, per-step settings and
# input functions. Everything here runs at parse time (also inside every Slurm job), so
# it stays cheap: one glob per source and one read of the small templates file.
import inspect
import os

from snakemake.common import overwrite_function_params
from snakemake.utils import validate

from cosmopedia import fingerprint, layout, plan

validate(config, schema="../schemas/config.schema.yaml")

try:
    SHARDS = plan.plan_shards(config)
    # Index files of the versions in minhash.index_from (may be none).
    MINHASH_PREVIOUS_FILES = sum(plan.minhash_previous_indexes(config), [])
except plan.PlanError as exc:
    raise WorkflowError(f"config: {exc}") from None

ROOT = plan.results_root(config)
SHARD_BY_KEY = {s.key: s for s in SHARDS}
SOURCES = sorted(config["sources"])
BUCKETS = list(range(config["minhash"]["num_buckets"]))
LOGS = f"{ROOT}/logs"
PROJECT_REVISION = plan.project_revision(workflow.basedir)
BENCHMARKS = f"{ROOT}/benchmarks"


# No wildcard_constraints: Snakemake 9 strips them from `rules.X.output` references, so
# with any constraint every such input is found by matching its path against all rules
# (1 M instructions per shard at planning, bench/dag.py). Names need no constraint:
# plan.py checks source and shard names ([A-Za-z0-9_-]), and every step has its own
# folder and one output pattern.


def per_shard(func):
    """Mark a param or input function that Snakemake calls for every shard's job.

    Snakemake reads such a function's signature (inspect.signature) several times per
    job, unless it is given once: 0.3 M instructions per function and shard at planning.
    """
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


def out(stage):
    """Pattern of a per-shard file (wildcards source, shard)."""
    return layout.shard_pattern(ROOT, stage)


def out_folder(stage):
    """Output of a step that writes its shard's files into one folder (layout.SHARD_FOLDERS)."""
    return directory(layout.shard_folder_pattern(ROOT, stage))


def all_shards(stage):
    """The files (or, for layout.SHARD_FOLDERS, the folders) of a per-shard stage for
    every planned shard, as an input function.

    A plain list would be hashed once per file when the rule also names a
    `rules.X.output` (Snakemake 9 expand_input): quadratic, 22 s at 3,000 shards.
    """
    path = layout.shard_folder if stage in layout.SHARD_FOLDERS else layout.shard_path
    paths = [path(ROOT, stage, s.source, s.name) for s in SHARDS]
    return lambda wildcards: paths


# Seed content hashes (cached by size and mtime): ingest reruns when bytes change, not mtimes.
SEED_SHA256 = fingerprint.fingerprints(
    [s.path for s in SHARDS if not s.is_hub],
    ".snakemake/cosmopedia/seed_fingerprints.json",
)


def settings(payload):
    """Step settings as the canonical JSON string the CLI takes (compared by repr)."""
    return plan.canonical_json(payload)


# Each ingest job's settings: its source's, the seed file and, for a local file, its
# sha256 (ingest checks it). Built once here: a param function per job costs planning time.
SOURCE_INGEST_SETTINGS = {
    source: plan.ingest_settings(config, source) for source in SOURCES
}
INGEST_SETTINGS = {
    s.key: settings(
        plan.ingest_shard_settings(
            SOURCE_INGEST_SETTINGS[s.source],
            s,
            None if s.is_hub else SEED_SHA256[s.path],
        )
    )
    for s in SHARDS
}


@per_shard
def ingest_settings(wildcards):
    return INGEST_SETTINGS[planned_shard(wildcards).key]


# Templates are read once here; each prompts job sees only its own family's hash.
PROMPTS_SETTINGS = {
    source: settings(plan.prompts_settings(config, source)) for source in SOURCES
}


@per_shard
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


def print_summary():
    summary = layout.global_path(ROOT, "summary")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            print(f"\n{f.read()}", end="")


def dups_dir(wildcards, output):
    """The folder of the buckets job's {bucket}.dups files."""
    return os.path.dirname(output.dups[0])


def index_dir(wildcards, output):
    """The folder of this version's {bucket}.minhash.index files."""
    return os.path.dirname(output.index[0])


def publish_options(wildcards):
    publish = config["publish"]
    options = [f"--repo-id {publish['repo_id']}"] if publish["repo_id"] else []
    options += ["--private"] if publish["private"] else []
    options += ["--dry-run"] if publish["dry_run"] else []
    return " ".join(options)


GENERATE_SETTINGS = settings(plan.generate_settings(config))


@per_shard
def generate_settings(wildcards, output):
    """Every generation setting, for the CLI. Taking `output` makes Snakemake treat this
    param as derived and not compare it: operational knobs (concurrency, timeouts, retries,
    instances) must not regenerate shards; what changes results is in params.request."""
    return GENERATE_SETTINGS


# A Hub shard (hf://datasets/<repo>@<revision>/<file>) has no local input: only this job
# reaches the network, and its pinned revision (in the settings) stands for its content.
@per_shard
def ingest_input(wildcards):
    shard = planned_shard(wildcards)
    return [] if shard.is_hub else ancient(shard.path)


def planned_shard(wildcards):
    key = f"{wildcards.source}/{wildcards.shard}"
    if key not in SHARD_BY_KEY:
        raise WorkflowError(
            f"{key!r} is not a planned shard (<source>/<shard> of config sources). Ask for"
            " a stage's file or folder of one shard, e.g. clean/<source>/<shard>, not a file"
            " inside a step's folder."
        )
    return SHARD_BY_KEY[key]


def results_root(wildcards, output):
    """The results root, for steps that find every stage's files through cosmopedia.layout."""
    return ROOT


def release_dir(wildcards, input):
    """The release folder: the one holding the manifest."""
    return os.path.dirname(input.manifest)
