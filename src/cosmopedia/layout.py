"""Where every file lives: the one home of paths.

Under results/<name>/<version>/ (the "root"): every stage's per-shard files and folders,
the global files, logs, runtime measurements (Snakemake's `benchmark:` files) and the
report. Outside it: the caches of downloaded benchmarks and of seed-file hashes. The
Snakemake rules take their output patterns and the file names inside step folders from
here, and the aggregate steps find per-shard files through the same patterns, so the two
can never disagree.
"""

from __future__ import annotations

import posixpath

# stage -> pattern relative to the results root; {source} and {shard} name a shard.
SHARD_FILES = {
    "seeds": "seeds/{source}/{shard}.parquet",
    "prompts": "prompts/{source}/{shard}.parquet",
    "generations": "generations/{source}/{shard}/generations.parquet",
    "generation_provenance": "generations/{source}/{shard}/provenance.json",
    # Beside the shard's folder: Snakemake deletes a job's outputs before it runs, not these.
    "generation_checkpoint": "generations/{source}/{shard}.checkpoint.jsonl",
    # The last finished output (a hard link of generations.parquet) and what its requests
    # shared: a rerun reuses its rows (generation/checkpoint.py).
    "generation_previous": "generations/{source}/{shard}.previous",
    # Only for a shard with failed rows (or retried once): what planning reads to rerun it
    # with generation.retry_failed (plan.generate_retry_params).
    "generation_retry": "generations/{source}/{shard}.retry.json",
    "clean": "clean/{source}/{shard}/kept.parquet",
    "clean_dropped": "clean/{source}/{shard}/dropped.parquet",
    "signatures": "minhash/signatures/{source}/{shard}",
    # Inside the signatures folder: the document stream the signatures were made from.
    "signature_stream": "minhash/signatures/{source}/{shard}/stream.json",
    # Inside the cluster job's folder (global "remove_dir"): the shard's documents to
    # drop, and which of those matched a previous version (minhash.index_from).
    "remove": "minhash/remove/{source}/{shard}.remove",
    "remove_previous": "minhash/remove/{source}/{shard}.previous",
    "dedup": "dedup/{source}/{shard}/kept.parquet",
    "dedup_removed": "dedup/{source}/{shard}/removed.parquet",
    "decontam": "decontam/{source}/{shard}/kept.parquet",
    "decontam_report": "decontam/{source}/{shard}/report.parquet",
}

# A step that writes several files per shard writes them into one folder per shard, and
# the folder is its one declared output: Snakemake's planning time grows with every
# declared file (and param) of every shard (docs/cluster.md, bench/dag.py). Its rule
# names the files inside in its command ({output.clean}/kept.parquet), as SHARD_FILES
# does here; the aggregate steps find them through SHARD_FILES. stage -> that folder.
SHARD_FOLDERS = {
    stage: posixpath.dirname(SHARD_FILES[stage])
    for stage in ("generations", "clean", "dedup", "decontam")
}

# stage -> the name of its file inside its shard's folder, for the rules' commands.
FOLDER_FILES = {
    stage: posixpath.basename(pattern)
    for stage, pattern in SHARD_FILES.items()
    if posixpath.dirname(pattern) in SHARD_FOLDERS.values()
}

GLOBAL_FILES = {
    "plan": "plan/shards.json",
    "buckets": "minhash/buckets/{bucket}.dups",
    "remove_dir": "minhash/remove",
    "clusters": "minhash/clusters.parquet",
    "cluster_report": "minhash/cluster_report.tsv",
    "buckets_manifest": "minhash/buckets/{bucket}.dups.json",
    # This version's MinHash index, one file per bucket (+ .json): what a later version
    # deduplicates against (config minhash.index_from).
    "minhash_index": "minhash/index/{bucket}.minhash.index",
    "minhash_index_manifest": "minhash/index/{bucket}.minhash.index.json",
    "benchmark_items": "decontam/benchmarks.parquet",
    "benchmark_index": "decontam/benchmarks.ngrams",
    "decontam_summary": "decontam/summary.tsv",
    "dataset_dir": "dataset",
    "dataset_data": "dataset/data",
    "manifest": "dataset/manifest.json",
    "card": "dataset/README.md",
    "removed_rows": "dataset/removed_rows.parquet",
    "checksums": "dataset/SHA256SUMS",
    # The run's summary names local paths: beside the release, not in it.
    "summary": "summary.txt",
    "publish_receipt": "publish/receipt.json",
    # One log per job: logs/<rule>/<source>/<shard>.log, or logs/<rule>.log.
    "logs": "logs",
    # Snakemake's `benchmark:` files (wall time, memory per job): runtimes/<rule>/...tsv.
    # "benchmarks" means the evaluation benchmarks of decontamination everywhere else.
    "runtimes": "runtimes",
    "report_dir": "report",
}

# Caches outside results/ (shared by every dataset version), relative to the working dir.
CACHE_FILES = {
    # A Hub benchmark's items at its pinned revision (decontamination.benchmarks: hub:NAME).
    "hub_benchmark": "resources/benchmarks/{name}/{revision}.parquet",
    # sha256 of local seed files by (path, size, mtime): planning hashes a file once.
    "seed_fingerprints": ".snakemake/cosmopedia/seed_fingerprints.json",
}

# Released file of one shard, relative to the dataset folder: one dataset config per source
# (sources.<name>.dataset_config, the source's name by default), as Cosmopedia's configs.
DATASET_SHARD = "data/{config}/{source}/{shard}.parquet"


def shard_path(root: str, stage: str, source: str, shard: str) -> str:
    return f"{root}/{SHARD_FILES[stage].format(source=source, shard=shard)}"


def shard_pattern(root: str, stage: str) -> str:
    """Snakemake pattern of a per-shard file (wildcards {source}, {shard})."""
    return f"{root}/{SHARD_FILES[stage]}"


def shard_folder(root: str, stage: str, source: str, shard: str) -> str:
    return f"{root}/{SHARD_FOLDERS[stage].format(source=source, shard=shard)}"


def shard_folder_pattern(root: str, stage: str) -> str:
    """Snakemake output pattern of a stage's per-shard folder (wildcards {source}, {shard})."""
    return f"{root}/{SHARD_FOLDERS[stage]}"


def shard_glob(root: str, stage: str) -> str:
    """A shell glob of a per-shard file over every shard, for messages."""
    return f"{root}/{SHARD_FILES[stage].format(source='*', shard='*')}"


def global_path(root: str, name: str, **kwargs) -> str:
    return f"{root}/{GLOBAL_FILES[name].format(**kwargs)}"


def cache_path(which: str, **kwargs) -> str:
    return CACHE_FILES[which].format(**kwargs)


def plan_root(plan_path: str) -> str:
    """The results root that holds the shard plan `<root>/plan/shards.json`."""
    suffix = "/" + GLOBAL_FILES["plan"]
    if not str(plan_path).endswith(suffix):
        raise ValueError(f"{plan_path!r} is not <results root>{suffix}")
    return str(plan_path)[: -len(suffix)]


def plan_stage_paths(plan: list[dict], root: str, stage: str) -> dict[str, str]:
    """{source}/{shard} -> the file of `stage`, for every shard of a plan, in plan order.

    Aggregate steps take their inputs this way, not as one path per shard on the command
    line: at 3,000 shards such lists run to hundreds of KB.
    """
    return {
        f"{e['source']}/{e['shard']}": shard_path(root, stage, e["source"], e["shard"])
        for e in plan
    }
