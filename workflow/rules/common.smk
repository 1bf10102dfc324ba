# Shared helpers of the rules: config validation, the shard plan, per-step settings and
# input functions. Everything here runs at parse time (also inside every Slurm job), so
# it stays cheap: one glob per source and one read of the small templates file.
import os

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


wildcard_constraints:
    source="[a-z0-9_]+",
    shard="[A-Za-z0-9_-]+",
    bucket="[0-9]+",


def out(stage):
    """Output pattern of a per-shard stage (wildcards source, shard)."""
    return layout.shard_pattern(ROOT, stage)


def all_shards(stage):
    """The files of a per-shard stage for every planned shard, as an input function.

    A plain list would be hashed once per file when the rule also names a
    `rules.X.output` (Snakemake 9 expand_input): quadratic, 22 s at 3,000 shards.
    """
    paths = [layout.shard_path(ROOT, stage, s.source, s.name) for s in SHARDS]
    return lambda wildcards: paths


# Seed content hashes (cached by size and mtime): ingest reruns when bytes change, not mtimes.
SEED_SHA256 = fingerprint.fingerprints(
    [s.path for s in SHARDS if not s.is_hub],
    ".snakemake/cosmopedia/seed_fingerprints.json",
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
PROMPTS_SETTINGS = {
    source: settings(plan.prompts_settings(config, source)) for source in SOURCES
}


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


def generate_settings(wildcards, output):
    """Every generation setting, for the CLI. Taking `output` makes Snakemake treat this
    param as derived and not compare it: operational knobs (concurrency, timeouts, retries,
    instances) must not regenerate shards; what changes results is in params.request."""
    return settings(plan.generate_settings(config))


# A Hub shard (hf://datasets/<repo>@<revision>/<file>) has no local input: only this job
# reaches the network, and its pinned revision (in the settings) stands for its content.
def ingest_input(wildcards):
    shard = SHARD_BY_KEY[f"{wildcards.source}/{wildcards.shard}"]
    return [] if shard.is_hub else seed_file(wildcards)


def ingest_seed(wildcards):
    return SHARD_BY_KEY[f"{wildcards.source}/{wildcards.shard}"].path


def ingest_fingerprint(wildcards):
    shard = SHARD_BY_KEY[f"{wildcards.source}/{wildcards.shard}"]
    return shard.path if shard.is_hub else seed_sha256(wildcards)


def results_root(wildcards, output):
    """The results root, for steps that find every stage's files through cosmopedia.layout."""
    return ROOT


def release_dir(wildcards, input):
    """The release folder: the one holding the manifest."""
    return os.path.dirname(input.manifest)
