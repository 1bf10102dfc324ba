"""Reruns are driven by content: each change reruns exactly the jobs it feeds.

Asserted on the dry-run job list of a finished run (`snakemake -n --quiet rules`).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from conftest import make_workdir, run_snakemake

pytestmark = pytest.mark.e2e

BIG_SEED = "resources/demo/seeds/web/web-big.jsonl"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run whose web source also has a seed file over Snakemake's 1 MB checksum limit."""
    workdir = make_workdir(tmp_path_factory.mktemp("reruns") / "base")
    topics = ["tidal pools", "bread baking", "bicycle repair"]
    rows = [
        {"text": f"A long page about {t}. " + f"More notes on {t} and practice. " * 12_000}
        for t in topics
    ]
    (workdir / BIG_SEED).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (workdir / BIG_SEED).stat().st_size > 1_100_000
    run_snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run (mtimes and Snakemake metadata kept) to change freely."""
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir, symlinks=True)
    return workdir


def planned_jobs(workdir, *args) -> dict[str, int]:
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", *args)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


def extra_config(workdir, change: dict) -> tuple[str, ...]:
    path = workdir / "extra.yaml"
    path.write_text(yaml.safe_dump(change))
    # Config file paths are relative to the caller's directory, not --directory.
    return ("--configfile", str(workdir / "config/config.yaml"), str(path))


def test_nothing_to_do_after_a_run(run):
    assert planned_jobs(run) == {}


def test_touching_every_seed_file_reruns_nothing(run):
    seeds = sorted((run / "resources/demo/seeds").glob("*/*.jsonl"))
    assert any(p.stat().st_size > 1_000_000 for p in seeds)  # past Snakemake's checksum limit
    for path in seeds:
        os.utime(path)
    assert planned_jobs(run) == {}


def test_changing_one_seed_shard_regenerates_one_shard(run):
    path = run / "resources/demo/seeds/stories/stories-00001.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[3])
    row["text"] += " Also, the party is on a boat."
    lines[3] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    jobs = planned_jobs(run)
    assert jobs["ingest"] == jobs["prompts"] == jobs["generate"] == jobs["clean"] == 1
    assert jobs["minhash_signature"] == 1
    # The global dedup/decontam steps are cheap and see every shard: they rerun.
    assert jobs["minhash_cluster"] == jobs["dataset"] == 1


def test_changing_the_decontamination_threshold_regenerates_nothing(run):
    jobs = planned_jobs(run, *extra_config(run, {"decontamination": {"threshold": 0.6}}))
    assert "prompts" not in jobs and "generate" not in jobs and "clean" not in jobs
    assert jobs["decontaminate"] == 7 and jobs["dataset"] == 1


def test_changing_the_model_revision_reruns_every_generate_job(run):
    jobs = planned_jobs(run, *extra_config(run, {"generation": {"revision": "1"}}))
    assert "ingest" not in jobs and "prompts" not in jobs
    assert jobs["generate"] == 7


def test_changing_how_generation_runs_regenerates_nothing(run):
    change = {"generation": {"concurrency": 3, "request_timeout_s": 60, "max_retries": 2}}
    jobs = planned_jobs(run, *extra_config(run, change))
    # Only the manifest (which records the whole resolved config) is rewritten.
    assert "generate" not in jobs and "clean" not in jobs
    assert jobs["dataset"] == 1


def test_editing_one_familys_templates_reruns_only_its_prompts(run):
    path = run / "resources/prompts/templates.yaml"
    templates = yaml.safe_load(path.read_text())
    templates["families"]["stories"]["entries"]["reddit_post"]["template"] += " Keep it short."
    path.write_text(yaml.safe_dump(templates))
    jobs = planned_jobs(run)
    assert jobs["prompts"] == 2  # the two stories shards
    assert "ingest" not in jobs
