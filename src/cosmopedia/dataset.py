"""Dataset: decontaminated shards -> Cosmopedia-schema Parquet files + manifest.json.

One file per shard under data/<config>/<source>/ (one dataset config per source, or per
group of sources sharing sources.<name>.dataset_config, as Cosmopedia's), the rows
that every stage removed gathered in one table with their reason, a manifest with the
sha256, bytes, rows and tokens of every file and the row counts of every stage, and a
plain-text summary. Nothing in the release holds a timestamp or an absolute path: the
same inputs give the same bytes. The summary (beside the release, not in it) also says
what generation cost (GPU-hours, overhead: cosmopedia.accounting), which varies by run.

Counts add up: the rows read from a seed file are the released rows plus the removed
rows, and at every stage the rows that reach it are the rows it keeps plus the rows it
removes (seed rows set aside by `on_bad_rows: quarantine` are removed at stage `ingest`).
The step fails if they do not.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

import polars as pl

from cosmopedia import __version__, accounting
from cosmopedia import settings as step_settings
from cosmopedia.card import dataset_card
from cosmopedia.errors import CliError
from cosmopedia.hashing import sha256_file
from cosmopedia.io import (
    CLEAN_KEY,
    INGEST_KEY,
    atomic_dir,
    read_json,
    read_parquet,
    read_parquet_metadata,
    write_parquet,
    write_text,
)
from cosmopedia.layout import DATASET_SHARD, GLOBAL_FILES, global_path, shard_glob, shard_path
from cosmopedia.plan import read_plan
from cosmopedia.release import (
    ROOT_FORMULA,
    count_problems,
    removed_by_shard,
    root_sha256,
    seal,
)

log = logging.getLogger("cosmopedia.dataset")

# Cosmopedia's columns first, then this project's documented extras.
DATASET_COLUMNS = [
    "prompt",
    "text",
    "text_token_length",
    "seed_data",
    "format",
    "audience",
    "seed_text",
    "id",
    "source",
    "seed",
    "finish_reason",
]
KEY_PACKAGES = (
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "datatrove",
    "datasets",
    "huggingface-hub",
    "polars",
    "pyarrow",
    "zstandard",
    "spacy",
)
# Rows per stage of every shard; "read": the rows read from the seed file by ingest.
COUNTED_STAGES = ["read", "seeds", "prompts", "generations", "clean", "dedup", "decontam"]
# Generation provenance that describes the data. Host, devices, timings, retries and rows
# reused from a checkpoint describe one run: they stay in the shard's provenance file, so
# a resumed, retried or Slurm run gives the same manifest as an uninterrupted local one.
MANIFEST_GENERATION_KEYS = (
    "dataset_version",
    "engine",
    "model",
    "revision",
    "sampling",
    "seed_scheme",
    "rows",
    "done",
    "failed",
    "finish_reasons",
    "generated_tokens",
)
# Files of the release folder, relative to it.
RELEASE = {
    name: posixpath.relpath(GLOBAL_FILES[name], GLOBAL_FILES["dataset_dir"])
    for name in ("card", "removed_rows")
}
REMOVED_COLUMNS = {
    "id": pl.String,
    "source": pl.String,
    "shard": pl.String,
    "stage": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}


def parquet_rows(path: str) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def read_ingest_record(root: str, source: str, shard: str) -> dict:
    """What ingest recorded in the seed shard: rows read and kept, bad rows set aside."""
    path = shard_path(root, "seeds", source, shard)
    record = read_parquet_metadata(path).get(INGEST_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
        raise CliError(f"{path}: no ingest record in its metadata (rerun its ingest job)")
    return record


def removed_rows(root: str, source: str, shard: str, ingest: dict) -> pl.DataFrame:
    """Every row a stage removed from this shard, with the stage and the reason."""
    clean = read_parquet(shard_path(root, "clean_dropped", source, shard))
    dedup = read_parquet(shard_path(root, "dedup_removed", source, shard))
    report = read_parquet(shard_path(root, "decontam_report", source, shard))
    # One report row per candidate match: a removed row once, by its best match.
    decontam = report.filter(pl.col("removed") & pl.col("best"))
    # A quarantined row may have no usable id: it gets the one its position would give.
    quarantined = pl.DataFrame(
        {
            # A row range's rows carry the file's shard name (ingest's row ids).
            "id": [
                f"{source}/{ingest.get('file_shard', shard)}/{bad['row']:07d}"
                for bad in ingest["rows"]
            ],
            "detail": [bad["error"] for bad in ingest["rows"]],
        },
        schema={"id": pl.String, "detail": pl.String},
    )
    frames = [
        quarantined.select(
            "id",
            pl.lit(source).alias("source"),
            pl.lit("ingest").alias("stage"),
            pl.lit("quarantined").alias("reason"),
            "detail",
        ),
        clean.select(
            "id",
            "source",
            pl.lit("clean").alias("stage"),
            "reason",
            pl.coalesce("error", pl.col("finish_reason")).alias("detail"),
        ),
        dedup.select(
            "id",
            "source",
            pl.lit("dedup").alias("stage"),
            "reason",
            pl.lit(None, pl.String).alias("detail"),
        ),
        decontam.select(
            "id",
            pl.lit(source).alias("source"),
            pl.lit("decontaminate").alias("stage"),
            pl.lit("benchmark_overlap").alias("reason"),
            pl.format("{} {} ratio={}", "task_name", "item_id", pl.col("ratio").round(4)).alias(
                "detail"
            ),
        ),
    ]
    frames = [f.with_columns(pl.lit(shard).alias("shard")).select(*REMOVED_COLUMNS) for f in frames]
    return pl.concat([f.cast(REMOVED_COLUMNS) for f in frames])


def build_dataset(
    root: str, plan: list[dict], settings: step_settings.Dataset, out_dir: str | Path
) -> dict:
    """Write the data files and removed_rows.parquet into the release folder `out_dir`;
    the manifest's content so far (release.seal adds the other files and the roots)."""
    files, stages, removed = [], {}, []
    for entry in plan:
        source, shard = entry["source"], entry["shard"]
        config = settings.configs[source]
        kept = read_parquet(shard_path(root, "decontam", source, shard))
        rel = DATASET_SHARD.format(config=config, source=source, shard=shard)
        write_parquet(kept.select(DATASET_COLUMNS), f"{out_dir}/{rel}")
        files.append(
            {
                "path": rel,
                "config": config,
                "sha256": sha256_file(f"{out_dir}/{rel}"),
                "bytes": Path(f"{out_dir}/{rel}").stat().st_size,
                "rows": kept.height,
                "tokens": int(kept["text_token_length"].sum() or 0),
            }
        )
        ingest = read_ingest_record(root, source, shard)
        counts = {s: parquet_rows(shard_path(root, s, source, shard)) for s in COUNTED_STAGES[1:]}
        stages[f"{source}/{shard}"] = {"read": ingest["rows_read"], **counts}
        removed.append(removed_rows(root, source, shard, ingest))
    removed_df = pl.concat(removed) if removed else pl.DataFrame(schema=REMOVED_COLUMNS)
    removed_df = removed_df.sort("stage", "id")
    if problems := count_problems(stages, removed_by_shard(removed_df)):
        raise CliError("row counts do not add up:\n  " + "\n  ".join(problems))
    write_parquet(removed_df, f"{out_dir}/{RELEASE['removed_rows']}", sort_by=None)

    files.sort(key=lambda f: f["path"])
    totals = {s: sum(c[s] for c in stages.values()) for s in COUNTED_STAGES}
    removed_by = {
        f"{stage}/{reason}": n
        for stage, reason, n in removed_df.group_by("stage", "reason")
        .len()
        .sort("stage", "reason")
        .rows()
    }
    generation, token_counts = {}, {}
    for entry in plan:
        clean_file = shard_path(root, "clean", entry["source"], entry["shard"])
        record = read_parquet_metadata(clean_file).get(CLEAN_KEY, {"token_count": "engine"})
        token_counts[f"{entry['source']}/{entry['shard']}"] = record
        prov = read_json(shard_path(root, "generation_provenance", entry["source"], entry["shard"]))
        key = f"{entry['source']}/{entry['shard']}"
        generation[key] = {k: prov[k] for k in MANIFEST_GENERATION_KEYS if k in prov}
    return {
        "dataset": {k: getattr(settings, k) for k in ("name", "version", "license")},
        "cosmopedia_version": __version__,
        "project": step_settings.to_dict(settings.project),
        "packages": package_versions(),
        "config": step_settings.to_dict(settings.config),
        "config_sha256": settings.config_sha256,
        "seed_scheme": settings.seed_scheme,
        "determinism": determinism(generation),
        # The card shows the data files' root: the full root covers the card itself.
        "root_formula": ROOT_FORMULA,
        "data_root_sha256": root_sha256(files),
        "files": files,
        "totals": {
            "rows": sum(f["rows"] for f in files),
            "tokens": sum(f["tokens"] for f in files),
        },
        "stage_rows": {"total": totals, "by_shard": stages},
        "removed": removed_by,
        "generation": generation,
        "text_token_length": text_token_length(token_counts),
    }


def text_token_length(by_shard: dict[str, dict]) -> dict:
    """How text_token_length was counted: the model's tokenizer (as Cosmopedia) or the
    engine's count of generated tokens, per shard (clean metadata) and overall."""
    kinds = sorted({record["token_count"] for record in by_shard.values()})
    return {
        "counted_by": kinds[0] if len(kinds) == 1 else "mixed",
        "by_shard": by_shard,
    }


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def determinism(generation: dict) -> str:
    """How exactly generation can be repeated: the statement each shard's engine recorded
    (one, or each with the engine kinds it holds for)."""
    statements: dict[str, set[str]] = {}
    for prov in generation.values():
        engine = prov.get("engine", {})
        kind = engine.get("kind", "unknown")
        statement = engine.get("determinism") or _determinism_before_recorded(kind)
        statements.setdefault(statement, set()).add(kind)
    if len(statements) == 1:
        return next(iter(statements))
    return "; ".join(
        f"{', '.join(sorted(kinds))}: {statement}"
        for statement, kinds in sorted(statements.items(), key=lambda item: sorted(item[1]))
    )


def _determinism_before_recorded(kind: str) -> str:
    """The statement of provenance written before engines recorded their own."""
    if kind == "dummy":
        return "exact: the dummy engine is a pure function of prompt and seed"
    return (
        f"engine-dependent ({kind}): seeded sampling, but continuous batching can change "
        "logits; reuse cached generations for exact rebuilds"
    )


def summary_text(manifest: dict, root: str, generation: list[str] | None = None) -> str:
    """The run's summary (summary.txt, beside the release); `generation`: the lines of
    what generation cost (cosmopedia.accounting), which describe one run and so are never
    in the manifest."""
    totals = manifest["stage_rows"]["total"]
    lines = [
        f"Dataset {manifest['dataset']['name']} {manifest['dataset']['version']}: "
        f"{manifest['totals']['rows']} rows, {manifest['totals']['tokens']} tokens "
        f"in {len(manifest['files'])} files",
        "rows per stage: " + ", ".join(f"{s} {totals[s]}" for s in COUNTED_STAGES),
        "removed: " + (", ".join(f"{k} {v}" for k, v in manifest["removed"].items()) or "none"),
        *(generation or []),
        f"dataset files:  {global_path(root, 'dataset_data')}/",
        f"manifest:       {global_path(root, 'manifest')} (root sha256 {manifest['root_sha256']})",
        f"checksums:      {global_path(root, 'checksums')} (sha256sum -c SHA256SUMS)",
        f"removed rows:   {global_path(root, 'removed_rows')}",
        "per-shard reports: "
        + ", ".join(
            shard_glob(root, s) for s in ("clean_dropped", "dedup_removed", "decontam_report")
        ),
    ]
    return "\n".join(lines) + "\n"


def add_arguments(name, parser):
    parser.add_argument("--root", required=True, help="results root (results/<name>/<version>)")
    parser.add_argument("--plan", required=True, help="shard plan (plan/shards.json)")
    parser.add_argument("--settings", required=True, help="JSON (or @file): dataset settings")


def main(args) -> int:
    settings = step_settings.load(step_settings.Dataset, args.settings)
    _, plan = read_plan(args.plan, args.root)
    # The release folder is written whole and then replaces the previous one: nothing
    # stale (a dropped shard's file, a killed run's temporary file) is sealed or published.
    with atomic_dir(global_path(args.root, "dataset_dir")) as release:
        manifest = build_dataset(args.root, plan, settings, release)
        schema = pl.read_parquet_schema(release / manifest["files"][0]["path"])
        write_text(dataset_card(manifest, schema), release / RELEASE["card"])
        manifest = seal(release, manifest)
    usages = accounting.read_usages(args.root, plan)
    summary = summary_text(manifest, args.root, accounting.summary_lines(usages))
    write_text(summary, global_path(args.root, "summary"))
    log.info("\n%s", summary)
    return 0
