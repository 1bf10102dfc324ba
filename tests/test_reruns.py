"""Reruns are driven by content: each change reruns exactly the jobs it feeds.

Asserted on the dry-run job list of a finished run (`snakemake -n --quiet rules`).
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import yaml

from conftest import make_workdir, planned_jobs, run_snakemake

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


def executed_jobs(output: str) -> dict[str, int]:
    """Jobs a real run finished, per rule (Snakemake's "Finished jobid: N (Rule: X)")."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def shard_files(root, stage: str) -> dict[str, tuple[int, bytes]]:
    """(mtime, bytes) of every file of a per-shard step, by path under the step's folder."""
    base = root / stage
    return {
        str(p.relative_to(base)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(base.glob("*/*/*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


@pytest.mark.parametrize(
    ("seed", "line", "text", "other_removals"),
    [
        # A story request edited: no other shard's removals change.
        ("stories/stories-00001", 3, "{} Also, the party is on a boat.", set()),
        # The kept half of the demo's near-duplicate pair (resources/demo/README.md) rewritten:
        # its twin in web-00001 is no longer removed, so that shard is filtered again too.
        (
            "web/web-00000",
            10,
            "A field guide to tide pools: anemones, hermit crabs and the sea stars that "
            "hunt them at low tide, and how to walk on wet rocks without crushing anything.",
            {"web/web-00001"},
        ),
    ],
)
def test_after_one_changed_seed_shard_only_changed_removals_are_filtered_again(
    run, seed, line, text, other_removals
):
    """A real rerun: the changed shard's chain, the global MinHash and dataset jobs, and
    the filter and decontamination jobs of only the shards whose removal files (or clean
    rows) changed; every other shard's dedup and decontam files keep their mtime and bytes."""
    root = run / "results/cosmopedia-demo/v0.1"
    before = {stage: shard_files(root, stage) for stage in ("dedup", "decontam")}
    removals = {p.relative_to(root): p.read_bytes() for p in root.glob("minhash/remove/*/*")}
    path = run / f"resources/demo/seeds/{seed}.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[line])
    row["text"] = text.format(row["text"])
    lines[line] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    # A dry-run decides before clustering: the changed shard's filter job only (which
    # other shards' removals change is known after the cluster job, which plans again).
    planned = planned_jobs(run)
    assert planned["minhash_filter"] == planned["decontaminate"] == 1
    assert planned["minhash_cluster"] == planned["minhash_replan"] == 1

    proc = run_snakemake(run, "--cores", "2")
    jobs = executed_jobs(proc.stdout + proc.stderr)
    changed_removals = {
        f"{p.parent.name}/{p.name.rsplit('.', 1)[0]}"
        for p, data in removals.items()
        if (root / p).read_bytes() != data
    }
    assert changed_removals - {seed} == other_removals
    expected = {seed} | other_removals
    for rule in ("ingest", "prompts", "generate", "clean", "minhash_signature"):
        assert jobs[rule] == 1, jobs
    for rule in ("minhash_buckets", "minhash_cluster", "minhash_replan", "dataset"):
        assert jobs[rule] == 1, jobs
    assert jobs["minhash_filter"] == jobs["decontaminate"] == len(expected), jobs
    assert sum(jobs.values()) == 9 + 2 * len(expected) + 3  # + decontam_summary, report, all
    for stage in ("dedup", "decontam"):
        after = shard_files(root, stage)
        assert set(after) == set(before[stage])
        rewritten = {"/".join(k.split("/")[:2]) for k in after if after[k] != before[stage][k]}
        kept = {k for k in after if "/".join(k.split("/")[:2]) not in expected}
        assert {k: after[k] for k in kept} == {k: before[stage][k] for k in kept}
        assert rewritten <= expected
    assert planned_jobs(run) == {}


def test_a_new_seed_file_is_filtered_once_its_removals_exist(run):
    """A new shard has no removal files yet: its filter job waits for minhash_replan to
    know them; the other shards' dedup and decontam files stay as they were."""
    root = run / "results/cosmopedia-demo/v0.1"
    before = {stage: shard_files(root, stage) for stage in ("dedup", "decontam")}
    topics = ["a lighthouse keeper", "a night market", "a glacier hike", "a chess club"]
    rows = [{"text": f"Write a short story about {t} who learns something new."} for t in topics]
    new = run / "resources/demo/seeds/stories/stories-00002.jsonl"
    new.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_snakemake(run, "--cores", "2")
    jobs = executed_jobs(proc.stdout + proc.stderr)
    assert jobs["ingest"] == jobs["generate"] == jobs["minhash_signature"] == 1, jobs
    assert jobs["minhash_filter"] == jobs["decontaminate"] == 1, jobs
    assert (root / "minhash/remove/stories/stories-00002.remove").exists()
    assert (root / "dedup/stories/stories-00002/kept.parquet").exists()
    for stage in ("dedup", "decontam"):
        after = shard_files(root, stage)
        assert {k: v for k, v in after.items() if "stories-00002" not in k} == before[stage]
    assert planned_jobs(run) == {}


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
