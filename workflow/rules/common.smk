# Shared helpers of the rules: config validation, the shard plan, each step's settings
# and input functions. Everything here runs at parse time (also inside every Slurm job),
# so it stays cheap: one glob per source and one read of the small templates file.
#
# Settings reach the jobs as JSON built from cosmopedia.settings (one typed dataclass per
# step). What changes results is a compared param (`settings`, or `request` for generate),
# so a config change reruns exactly the jobs it feeds. What only changes how a step runs
# (generation's x-operational keys: concurrency, timeouts, retries, instances) is in a
# global that the shell command names (GENERATE_SETTINGS): Snakemake compares params,
# input files and rule code, never the values the command is formatted with.
import os

from cosmopedia import fingerprint, layout, plan, yamlfile
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError, PlanError
from cosmopedia.generation import engines
from cosmopedia.snakemake_compat import cache_signature as per_shard

try:
    # Snakemake's YAML loading keeps the last of duplicated keys (a source declared twice
    # would vanish): read the config files again, strictly.
    for configfile_path in workflow.configfiles:
        yamlfile.read(configfile_path)
    # The package's schema (defaults filled in place: Snakemake keeps this dict).
    config.update(step_settings.validate_config(config))
    # Credentials in generation.endpoint_url move to this process's environment, which
    # the jobs inherit (a Slurm job parses this file again): no param, command line, log
    # or manifest holds them (cosmopedia.redact, config/README.md).
    plan.move_endpoint_credentials(config, os.environ)
    SHARDS = plan.plan_shards(config)
    # Index files of the versions in minhash.index_from (may be none).
    MINHASH_PREVIOUS_FILES = sum(plan.minhash_previous_indexes(config), [])
    # Generation settings checked by their engine: a bad engine config fails here.
    GENERATE_JOB = plan.generate_job(config)
except (CliError, PlanError) as exc:
    raise WorkflowError(f"config: {exc}") from None

ROOT = plan.results_root(config)
SHARD_BY_KEY = {s.key: s for s in SHARDS}
SOURCES = sorted(config["sources"])
BUCKETS = list(range(config["minhash"]["num_buckets"]))
LOGS = layout.global_path(ROOT, "logs")
RUNTIMES = layout.global_path(ROOT, "runtimes")
FOLDER_FILES = layout.FOLDER_FILES
PROJECT_REVISION = plan.project_revision(workflow.basedir)


# No wildcard_constraints: Snakemake 9 strips them from `rules.X.output` references, so
# with any constraint every such input is found by matching its path against all rules
# (1 M instructions per shard at planning, bench/dag.py). Names need no constraint:
# plan.py checks source and shard names ([A-Za-z0-9_-]), and every step has its own
# folder and one output pattern.


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
    [s.path for s in SHARDS if not s.is_hub], layout.cache_path("seed_fingerprints")
)

settings = step_settings.canonical_json  # a step's settings as the JSON its CLI takes


# Each ingest job's settings: its source's, the seed file and, for a local file, its
# sha256 (ingest checks it). Built once here: a param function per job costs planning time.
SOURCE_INGEST_JOBS = {source: plan.ingest_job(config, source) for source in SOURCES}
INGEST_SETTINGS = {
    s.key: settings(
        plan.shard_ingest_job(
            SOURCE_INGEST_JOBS[s.source], s, None if s.is_hub else SEED_SHA256[s.path]
        )
    )
    for s in SHARDS
}


@per_shard
def ingest_settings(wildcards):
    return INGEST_SETTINGS[planned_shard(wildcards).key]


# Templates are read once here; each prompts job sees only its own family's hash.
PROMPTS_SETTINGS = {
    source: settings(plan.prompts_job(config, source)) for source in SOURCES
}


@per_shard
def prompts_settings(wildcards):
    return PROMPTS_SETTINGS[wildcards.source]


@per_shard
def generate_retry(wildcards):
    return GENERATE_RETRY.get(f"{wildcards.source}/{wildcards.shard}", "")


# Every generation setting, operational ones included, for the command (not compared);
# GENERATE_REQUEST, the generate rule's compared param, holds those that change results.
GENERATE_SETTINGS = settings(GENERATE_JOB)
GENERATE_REQUEST = settings(plan.generate_request(config))
# Shards with failed rows rerun with generation.retry_failed: their `retry` param changes
# (plan.generate_retry_params reads generations/<source>/<shard>.retry.json).
GENERATE_RETRY = plan.generate_retry_params(ROOT, config["generation"]["retry_failed"])
# With the model's tokenizer.json when it is on disk (counts text_token_length as Cosmopedia).
CLEAN_SETTINGS = settings(plan.clean_job(config))
MINHASH_SETTINGS = settings(plan.section(step_settings.Minhash, config))
DECONTAM_SETTINGS = settings(plan.section(step_settings.Decontamination, config))
# The benchmarks step needs only the N-gram size: a threshold change reruns it not.
BENCHMARKS_SETTINGS = settings({"ngram": config["decontamination"]["ngram"]})
DATASET_SETTINGS = settings(plan.dataset_job(config, PROJECT_REVISION))


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
    """The dataset step's summary.txt (rows, removed rows, GPU-hours and overhead) and, when
    some planned shards are not generated yet, the forecast of their GPU-hours (read at
    the end of the run, never at parse time)."""
    summary = layout.global_path(ROOT, "summary")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            print(f"\n{f.read()}", end="")
    from cosmopedia import forecast

    config_file = workflow.configfiles[-1] if workflow.configfiles else "FILE"
    try:
        lines = forecast.progress_lines(config, ROOT, config_file)
    except (CliError, PlanError, OSError, ValueError) as exc:
        lines = [f"generation forecast not available: {exc}"]
    if lines:
        print("\n" + "\n".join(lines))


# Folders passed to aggregate steps, derived from their outputs (as Snakemake's lint asks).
def dups_dir(wildcards, output):
    """The folder of the buckets job's {bucket}.dups files."""
    return os.path.dirname(output.dups[0])


def index_dir(wildcards, output):
    """The folder of this version's {bucket}.minhash.index files."""
    return os.path.dirname(output.index[0])


def report_dir(wildcards, output):
    """The folder of the report's plots and tables."""
    return os.path.dirname(output.token_lengths)


def results_root(wildcards, output):
    """The results root, for steps that find every stage's files through cosmopedia.layout."""
    return ROOT


def publish_options(wildcards):
    publish = config["publish"]
    options = [f"--repo-id {publish['repo_id']}"] if publish["repo_id"] else []
    options += ["--private"] if publish["private"] else []
    options += ["--dry-run"] if publish["dry_run"] else []
    return " ".join(options)


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


def release_dir(wildcards, input):
    """The release folder: the one holding the manifest."""
    return os.path.dirname(input.manifest)
