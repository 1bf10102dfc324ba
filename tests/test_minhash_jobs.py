"""MinHash buckets in several jobs (minhash.bucket_jobs): the same files as one job.

One buckets job runs every bucket (the default, for small runs); with bucket_jobs N the
buckets are split into N contiguous groups, one Snakemake rule and job each, which read
one summary of every shard's signatures (minhash/inputs.json) instead of listing every
signature folder. Whatever N, the buckets' files keep their paths and bytes, and so does
everything after them.
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import DEMO_ROOT, make_workdir, planned_jobs, run_snakemake
from cosmopedia import minhash, plan, settings
from cosmopedia.errors import CliError, PlanError

BUCKET_JOBS = 4  # the demo's 14 buckets: groups 0-3, 4-7, 8-10, 11-13


def groups(num_buckets: int, jobs: int) -> list[list[int]]:
    return plan.bucket_groups({"minhash": {"num_buckets": num_buckets, "bucket_jobs": jobs}})


def test_bucket_groups_are_contiguous_and_as_equal_as_can_be():
    assert groups(14, 1) == [list(range(14))]
    assert groups(14, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10], [11, 12, 13]]
    assert groups(14, 14) == [[b] for b in range(14)]
    for n in range(1, 20):
        for jobs in range(1, n + 1):
            split = groups(n, jobs)
            assert sum(split, []) == list(range(n))
            assert max(map(len, split)) - min(map(len, split)) <= 1
    with pytest.raises(PlanError, match=r"minhash.bucket_jobs: 15 jobs for 14 buckets"):
        groups(14, 15)


def test_bucket_jobs_is_not_a_result_setting():
    """Signatures, their stream records and every job's --settings text are the same
    whatever the number of buckets jobs: changing it reruns no signature job."""
    config = settings.validate_config(
        {
            "dataset": {"name": "d", "version": "v"},
            "sources": {"web": {"family": "web_samples", "files": "x/*.jsonl"}},
            "minhash": {"bucket_jobs": 7},
        }
    )
    section = plan.section(settings.Minhash, config)
    assert section.bucket_jobs == 7
    job = plan.job_settings(settings.Minhash, config)
    assert "bucket_jobs" not in job
    assert settings.load(settings.Minhash, settings.canonical_json(job)).bucket_jobs == 1
    assert "bucket_jobs" not in minhash.identity(section)["settings"]
    assert minhash.identity(section) == minhash.identity(minhash.parse_settings({}))


def test_too_many_bucket_jobs_fail_before_any_job(tmp_path):
    workdir = make_workdir(tmp_path / "w")
    (workdir / "more.yaml").write_text(yaml.safe_dump({"minhash": {"bucket_jobs": 15}}))
    config = ["--configfile", str(workdir / "config/config.yaml"), str(workdir / "more.yaml")]
    proc = run_snakemake(workdir, "-n", *config, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "minhash.bucket_jobs: 15 jobs for 14 buckets" in output, output[-3000:]
    assert not (workdir / "results").exists()


def test_buckets_refuse_signatures_other_than_their_inputs_record(tmp_path):
    record = tmp_path / "inputs.json"
    record.write_text(json.dumps({"format": minhash.INPUTS_FORMAT, "inputs_sha256": "0" * 64}))
    with pytest.raises(CliError, match="does not sum up these 0 shards' signatures"):
        minhash.buckets({}, tmp_path / "dups", {}, inputs=record)


@pytest.mark.e2e
def test_several_bucket_jobs_give_the_same_files_as_one(demo_run, tmp_path):
    """The demo with 4 buckets jobs: the same dups, index, removals, clusters, dedup and
    decontam files, and the same dataset manifest (root hash), byte for byte."""
    workdir = make_workdir(tmp_path / "w")
    (workdir / "jobs.yaml").write_text(yaml.safe_dump({"minhash": {"bucket_jobs": BUCKET_JOBS}}))
    config = ["--configfile", str(workdir / "config/config.yaml"), str(workdir / "jobs.yaml")]
    rules = planned_jobs(workdir, *config)
    buckets_rules = sorted(r for r in rules if r.startswith("minhash_buckets"))
    assert buckets_rules == [
        "minhash_buckets_00_03",
        "minhash_buckets_04_07",
        "minhash_buckets_08_10",
        "minhash_buckets_11_13",
    ], rules
    assert rules["minhash_inputs"] == 1
    run_snakemake(workdir, "--cores", "2", *config)

    one, several = demo_run / DEMO_ROOT, workdir / DEMO_ROOT
    compared = 0
    for folder in ("minhash/buckets", "minhash/index", "minhash/remove", "dedup", "decontam"):
        files = sorted(p.relative_to(one) for p in (one / folder).rglob("*") if p.is_file())
        assert files, folder
        for rel in files:
            assert (several / rel).read_bytes() == (one / rel).read_bytes(), rel
            compared += 1
    for name in ("minhash/clusters.parquet", "minhash/cluster_report.tsv"):
        assert (several / name).read_bytes() == (one / name).read_bytes(), name
    assert compared >= 4 * 14 + 6 * 4
    # The release: the same data (data root) and removed rows. The manifest records the
    # whole config (bucket_jobs included), so only the config, its hash, the card naming
    # that hash and the root over every file differ.
    manifest = json.loads((several / "dataset/manifest.json").read_text())
    expected = json.loads((one / "dataset/manifest.json").read_text())
    assert manifest["data_root_sha256"] == expected["data_root_sha256"]
    assert manifest["files"] == expected["files"]
    assert manifest["config"]["minhash"].pop("bucket_jobs") == BUCKET_JOBS
    assert expected["config"]["minhash"].pop("bucket_jobs") == 1
    for m in (manifest, expected):
        del m["config_sha256"], m["root_sha256"]
        m["other_files"] = [f for f in m["other_files"] if f["path"] != "README.md"]
    assert manifest == expected
    inputs = json.loads((several / "minhash/inputs.json").read_text())
    assert inputs["n_shards"] == 6 and inputs["format"] == minhash.INPUTS_FORMAT
    logs = sorted(p.name for p in (several / "logs" / "minhash_buckets").iterdir())
    assert logs == ["00_03.log", "04_07.log", "08_10.log", "11_13.log"]
    again = run_snakemake(workdir, "-n", *config)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_buckets_raise_the_open_files_limit_or_say_why_not(monkeypatch):
    """datatrove opens every shard's signature file of a bucket at once (3,000 at
    Cosmopedia's size): the soft limit is raised up to the hard one, or the job fails
    before any work."""
    import resource

    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 8192))
    minhash.allow_open_files(3000)
    assert calls == [(3000 + minhash.OWN_OPEN_FILES, 8192)]
    minhash.allow_open_files(100)
    assert len(calls) == 1
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 2048))
    with pytest.raises(CliError, match="3000 signature files per bucket .* at most 2048"):
        minhash.allow_open_files(3000)
