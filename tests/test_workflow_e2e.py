"""End-to-end: the real workflow on the demo config, in temporary directories."""

from __future__ import annotations

import glob
import json

import polars as pl
import pytest
import yaml

from conftest import DEMO_ROOT, make_workdir, run_snakemake
from cosmopedia import layout

pytestmark = pytest.mark.e2e

# Planted in resources/demo (see resources/demo/README.md).
NEAR_DUPLICATES = {"web/web-00000/0000010", "web/web-00001/0000021"}
CONTAMINATED = "web/web-00001/0000009"
STEP_RULES = {
    "shard_plan", "ingest", "prompts", "generate", "clean", "minhash_signature",
    "minhash_buckets", "minhash_cluster", "minhash_filter", "decontaminate", "dataset",
}  # fmt: skip


def stage_ids(workdir, stage):
    files = sorted(glob.glob(layout.shard_glob(str(workdir / DEMO_ROOT), stage)))
    assert files, stage
    return set(pl.concat([pl.read_parquet(f, columns=["id"]) for f in files])["id"])


def test_every_step_is_its_own_rule(tmp_path):
    workdir = make_workdir(tmp_path / "w")
    proc = run_snakemake(workdir, "-n", "--quiet", "rules")
    planned = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert planned >= STEP_RULES


def test_a_steps_shard_folder_is_a_target_and_a_file_inside_it_is_not(tmp_path):
    """Steps with several files per shard declare the folder: asking for it plans that
    shard's chain; asking for a file inside it says what to ask for instead."""
    workdir = make_workdir(tmp_path / "w")
    folder = layout.shard_folder(str(DEMO_ROOT), "clean", "web", "web-00000")
    proc = run_snakemake(workdir, "-n", folder)
    stats = proc.stdout.split("Job stats:")[1].split("total")[0].splitlines()[3:]
    planned = dict(line.split() for line in stats if line.strip())
    assert planned == {"ingest": "1", "prompts": "1", "generate": "1", "clean": "1"}, stats

    inside = layout.shard_path(str(DEMO_ROOT), "clean_dropped", "web", "web-00000")
    assert inside.startswith(folder + "/")
    proc = run_snakemake(workdir, "-n", inside, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "'web/web-00000/dropped.parquet' is not a planned shard" in output, output
    assert "not a file inside a step's folder" in output


def test_dataset_schema_and_manifest(demo_run):
    manifest = json.loads((demo_run / DEMO_ROOT / "dataset/manifest.json").read_text())
    # One dataset config per source, as Cosmopedia's (sources.<name>.dataset_config).
    assert {f["config"] for f in manifest["files"]} == {"web", "stories", "outline"}
    assert manifest["text_token_length"]["counted_by"] == "engine"  # no tokenizer for dummy
    for entry in manifest["files"]:
        df = pl.read_parquet(demo_run / DEMO_ROOT / "dataset" / entry["path"])
        assert df.columns[:6] == [
            "prompt", "text", "text_token_length", "seed_data", "format", "audience"
        ]  # fmt: skip
        assert df.columns[6] == "seed_text"  # the seed material (extract, snippet, trail)
        assert set(df["seed_data"]) == {entry["config"]}  # the source's label
        assert df.height == entry["rows"]
        assert df["id"].to_list() == sorted(df["id"].to_list())
        assert df["text"].str.len_chars().min() > 0
        assert int(df["text_token_length"].sum()) == entry["tokens"]
    assert manifest["totals"]["rows"] == sum(f["rows"] for f in manifest["files"]) > 100


def test_rows_per_stage_and_exactly_the_planted_rows_removed(demo_run):
    ids = {s: stage_ids(demo_run, s) for s in ("seeds", "prompts", "generations", "clean")}
    ids |= {s: stage_ids(demo_run, s) for s in ("dedup", "decontam")}
    assert len(ids["seeds"]) == 178
    assert ids["seeds"] == ids["prompts"] == ids["generations"]
    assert ids["clean"] >= NEAR_DUPLICATES and CONTAMINATED in ids["clean"]

    dedup_removed = ids["clean"] - ids["dedup"]
    assert len(dedup_removed) == 1 and dedup_removed < NEAR_DUPLICATES
    assert ids["dedup"] - ids["decontam"] == {CONTAMINATED}

    removed = pl.read_parquet(demo_run / DEMO_ROOT / "dataset/removed_rows.parquet")
    by_stage = removed.group_by("stage").agg(pl.col("id")).to_dicts()
    by_stage = {row["stage"]: set(row["id"]) for row in by_stage}
    assert by_stage["dedup"] == dedup_removed
    assert by_stage["decontaminate"] == {CONTAMINATED}
    assert by_stage["clean"] == ids["generations"] - ids["clean"]


def test_rerun_has_nothing_to_do(demo_run):
    proc = run_snakemake(demo_run, "-n", "--quiet", "rules")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_second_run_elsewhere_is_byte_identical(demo_run, tmp_path):
    other = make_workdir(tmp_path / "again")
    run_snakemake(other, "--cores", "2")
    first = (demo_run / DEMO_ROOT / "dataset/manifest.json").read_bytes()
    assert (other / DEMO_ROOT / "dataset/manifest.json").read_bytes() == first
    manifest = json.loads(first)
    for entry in manifest["files"]:
        rel = DEMO_ROOT / "dataset" / entry["path"]
        assert (other / rel).read_bytes() == (demo_run / rel).read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clean": {"min_tokenz": 3}}, "min_tokenz"),
        ({"clean": {"min_tokens": "many"}}, "min_tokens"),
        ({"sources": {"web": {"family": "poems", "files": "x"}}}, "poems"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, change, message):
    workdir = make_workdir(tmp_path / "w")
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    for section, value in change.items():
        config[section] = {**config.get(section, {}), **value}
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()
