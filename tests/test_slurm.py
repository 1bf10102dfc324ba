"""The workflow on a real Slurm cluster through snakemake-executor-plugin-slurm.

Needs the local single-node cluster of tests/slurm/up.sh (partitions cpu and gpu, 8 fake
H100s, slurmdbd so that sacct remembers every job). Without a controller the tests are
skipped, or fail when COSMOPEDIA_REQUIRE_SLURM=1 (CI). Every Snakemake call runs under
`timeout -s KILL`.

Cost on 2 cores: each Slurm job starts an inner snakemake (about 6 s of CPU), so the demo
(about 50 jobs in 11 waves) takes about 4 minutes; the cancel test reruns one shard's
generate job in a copy of that run (about 1 minute) instead of the whole workflow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import (
    BIN,
    DEMO_ROOT,
    REPO,
    SNAKEFILE,
    make_workdir,
    run_snakemake,
    workflow_env,
)
from cosmopedia.layout import shard_folder, shard_path

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

PROFILE = REPO / "profiles" / "slurm_test"
MANIFEST = DEMO_ROOT / "dataset" / "manifest.json"
GPU_RULE = "generate"
RUN_TIMEOUT_S = 900
# The shard whose generate job is cancelled: the biggest demo shard (most time to cancel).
CANCEL_SOURCE, CANCEL_SHARD = "web", "web-00000"
CANCEL_AFTER_ROWS = 3  # finished rows in the checkpoint before scancel


def _cluster_problem() -> str | None:
    """Why the local cluster cannot run these tests, or None if it can."""
    if shutil.which("scontrol") is None or shutil.which("sacct") is None:
        return "Slurm client commands (scontrol, sacct) are not installed"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        if ping.returncode != 0 or "UP" not in ping.stdout:
            return f"no Slurm controller answers `scontrol ping`: {ping.stdout.strip()}"
        acct = subprocess.run(
            ["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired as exc:
        return f"`{' '.join(exc.cmd)}` did not answer in {exc.timeout} s"
    if acct.returncode != 0:
        return f"sacct fails (no slurmdbd accounting?): {acct.stderr.strip()}"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    problem = _cluster_problem()
    if problem is None:
        return
    if os.environ.get("COSMOPEDIA_REQUIRE_SLURM") == "1":
        pytest.fail(f"COSMOPEDIA_REQUIRE_SLURM=1 but {problem}", pytrace=False)
    pytest.skip(f"{problem}; start the local cluster with tests/slurm/up.sh")


# --- Slurm accounting -------------------------------------------------------------------

SACCT_FIELDS = ("JobID", "Partition", "State", "Comment", "ReqTRES", "AllocTRES", "WorkDir")


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    partition: str
    state: str
    comment: str
    req_tres: str
    alloc_tres: str
    workdir: str

    @property
    def rule(self) -> str:
        """The plugin's --comment is rule_<name> or rule_<name>_wildcards_<values>."""
        return self.comment.removeprefix("rule_").split("_wildcards_")[0]

    @property
    def wildcards(self) -> str:
        return self.comment.partition("_wildcards_")[2]

    def tres(self, which: str) -> dict[str, str]:
        text = self.req_tres if which == "req" else self.alloc_tres
        return dict(item.split("=", 1) for item in text.split(",") if item)


def slurm_run_id(output: str) -> str:
    """The plugin's ID of one snakemake invocation: every job it submits has it as name."""
    match = re.search(r"^SLURM run ID: (\S+)$", output, re.MULTILINE)
    assert match, f"no SLURM run ID in the snakemake output\n{output[-3000:]}"
    return match.group(1)


def sacct_jobs(run_id: str, workdir: Path) -> list[SlurmJob]:
    """The jobs of one snakemake invocation, oldest first; sacct keeps them after MinJobAge."""
    cmd = ["sacct", "-X", "-P", "-n", "-S", "now-2days", "--name", run_id]
    cmd += ["-o", ",".join(SACCT_FIELDS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    jobs = [SlurmJob(*line.split("|")) for line in out.splitlines() if line.count("|") == 6]
    assert all(job.workdir == str(workdir) for job in jobs), jobs
    return sorted(jobs, key=lambda job: int(job.job_id))


def profile_resources() -> dict:
    with open(PROFILE / "config.yaml", encoding="utf-8") as f:
        profile = yaml.safe_load(f)
    gpu = profile["set-resources"][GPU_RULE]
    return {
        "gpu_partition": eval(gpu["slurm_partition"]),  # noqa: S307 - as Snakemake does
        "gpus": int(gpu["gpu"]),
        "cpu_partition": eval(profile["default-resources"]["slurm_partition"]),  # noqa: S307
    }


# --- the Slurm run of the demo ----------------------------------------------------------


@dataclass(frozen=True)
class SlurmRun:
    workdir: Path
    seconds: float
    jobs: list[SlurmJob]


def shards(workdir: Path) -> list[tuple[str, str]]:
    plan = json.loads((workdir / DEMO_ROOT / "plan" / "shards.json").read_text())
    return [(s["source"], s["shard"]) for s in plan["shards"]]


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> SlurmRun:
    """The demo workflow, every job submitted to the local cluster with the test profile."""
    workdir = make_workdir(tmp_path_factory.mktemp("slurm") / "work")
    started = time.monotonic()
    proc = run_snakemake(workdir, "--profile", str(PROFILE), timeout=RUN_TIMEOUT_S)
    jobs = sacct_jobs(slurm_run_id(proc.stderr + proc.stdout), workdir)
    return SlurmRun(workdir, time.monotonic() - started, jobs)


def test_slurm_run_gives_the_local_dataset(slurm_run, demo_run):
    """Same inputs and config on Slurm and locally: byte-identical manifest and data."""
    slurm_manifest = (slurm_run.workdir / MANIFEST).read_bytes()
    assert slurm_manifest == (demo_run / MANIFEST).read_bytes()
    for source, shard in shards(demo_run):
        generations = shard_path(str(DEMO_ROOT), "generations", source, shard)
        assert (slurm_run.workdir / generations).read_bytes() == (
            demo_run / generations
        ).read_bytes(), generations


def test_generate_jobs_ran_on_h100s_and_the_rest_on_cpu(slurm_run):
    res = profile_resources()
    jobs = slurm_run.jobs
    assert jobs, "sacct lists no job of this run"
    assert all(job.state == "COMPLETED" for job in jobs), [(j.comment, j.state) for j in jobs]

    generate = [job for job in jobs if job.rule == GPU_RULE]
    expected = {f"{source}_{shard}" for source, shard in shards(slurm_run.workdir)}
    assert sorted(job.wildcards for job in generate) == sorted(expected)
    for job in generate:
        assert job.partition == res["gpu_partition"], job
        for which in ("req", "alloc"):
            tres = job.tres(which)
            assert tres.get("gres/gpu:h100") == str(res["gpus"]), (which, job)
            assert tres.get("gres/gpu") == str(res["gpus"]), (which, job)

    others = [job for job in jobs if job.rule != GPU_RULE]
    rules = {job.rule for job in others}
    assert rules >= {"ingest", "prompts", "clean", "minhash_signature", "minhash_buckets"}
    assert rules >= {"minhash_cluster", "minhash_filter", "decontaminate", "dataset"}
    for job in others:
        assert job.partition == res["cpu_partition"], job
        assert not any(key.startswith("gres/gpu") for key in job.tres("req")), job
        assert not any(key.startswith("gres/gpu") for key in job.tres("alloc")), job


def test_engine_saw_the_allocated_gpus_and_listened_on_localhost(slurm_run):
    res = profile_resources()
    root = slurm_run.workdir / DEMO_ROOT
    for source, shard in shards(slurm_run.workdir):
        prov = json.loads(
            Path(shard_path(str(root), "generation_provenance", source, shard)).read_text()
        )
        devices = prov["cuda_visible_devices"]
        assert devices, (source, shard, devices)
        assert len(devices.split(",")) == res["gpus"], (source, shard, devices)
        assert all(d.isdigit() for d in devices.split(",")), (source, shard, devices)

        # Each engine instance got the job's GPUs and listened on loopback only: the
        # provenance records its URL and the launch command as run ...
        instances = prov["instances"]
        assert instances, prov
        assert ",".join(d for inst in instances for d in inst["gpus"]) == devices, instances
        for inst in instances:
            assert inst["url"].startswith("http://127.0.0.1:"), inst
            command = inst["command"]
            assert command[command.index("--host") + 1] == "127.0.0.1", command
        # ... and the engine itself, inside the GPU job, logged where it listened.
        engine_log = (root / "logs" / "generate" / source / f"{shard}.engine.log").read_text()
        assert "on http://127.0.0.1:" in engine_log, engine_log
        assert "0.0.0.0" not in engine_log, engine_log


# --- a generate job cancelled mid-shard --------------------------------------------------


def _running_job(workdir: Path, comment: str) -> str | None:
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    for line in out.splitlines():
        job_id, job_comment, job_workdir = line.split("|", 2)
        if job_comment == comment and job_workdir == str(workdir):
            return job_id
    return None


def _rows_in(path: Path) -> int:
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


def test_cancelled_generate_job_is_retried_and_resumes(slurm_run, demo_run, tmp_path):
    """scancel mid-shard: Snakemake resubmits (profile retries), the job reuses its checkpoint.

    Reruns (--force) this shard's generate job in a copy of the Slurm run, with a slowed
    dummy engine, two requests in flight and every row checkpointed: settings of how a
    shard is generated, not of what comes out. The shard must come out byte-identical to
    the local demo run's, and the rows finished before the cancel must not be sent again.
    """
    work = tmp_path / "work"
    shutil.copytree(slurm_run.workdir, work, symlinks=True)
    shutil.rmtree(work / ".snakemake" / "slurm_logs", ignore_errors=True)
    overrides = {
        "generation": {
            "concurrency": 2,
            "checkpoint_every": 1,
            "dummy": {"latency_per_token_s": 0.001},
        }
    }
    (work / "slow.yaml").write_text(yaml.safe_dump(overrides))
    target = shard_folder(str(DEMO_ROOT), "generations", CANCEL_SOURCE, CANCEL_SHARD)
    checkpoint = work / shard_path(
        str(DEMO_ROOT), "generation_checkpoint", CANCEL_SOURCE, CANCEL_SHARD
    )
    # Without its previous output, which any rerun reuses, the forced job sends every row.
    shutil.rmtree(
        work / shard_path(str(DEMO_ROOT), "generation_previous", CANCEL_SOURCE, CANCEL_SHARD)
    )
    provenance = shard_path(str(DEMO_ROOT), "generation_provenance", CANCEL_SOURCE, CANCEL_SHARD)
    comment = f"rule_{GPU_RULE}_wildcards_{CANCEL_SOURCE}_{CANCEL_SHARD}"

    cmd = [
        "timeout", "-s", "KILL", str(RUN_TIMEOUT_S),
        str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(work),
        "--profile", str(PROFILE),
        "--configfile", str(work / "config" / "config.yaml"), str(work / "slow.yaml"),
        "--force", "--", target,
    ]  # fmt: skip
    log = tmp_path / "snakemake.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=workflow_env(), start_new_session=True
        )
        try:
            cancelled, rows_before = None, 0
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                job_id = _running_job(work, comment)
                rows_before = _rows_in(checkpoint)
                if job_id and rows_before >= CANCEL_AFTER_ROWS:
                    subprocess.run(["scancel", job_id], check=True, timeout=30)
                    cancelled = job_id
                    break
                time.sleep(0.3)
            if cancelled:
                returncode = proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:  # snakemake ignores SIGTERM while it waits for jobs
                os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert cancelled, f"never saw the generate job running with a checkpoint\n{output[-4000:]}"
    assert returncode == 0, output[-6000:]

    # Slurm: the cancelled job, then Snakemake's resubmission, on the GPU partition.
    attempts = [job for job in sacct_jobs(slurm_run_id(output), work) if job.comment == comment]
    assert [job.state.split()[0] for job in attempts] == ["CANCELLED", "COMPLETED"], attempts
    assert attempts[0].job_id == cancelled
    assert all(job.partition == profile_resources()["gpu_partition"] for job in attempts)

    # Resumed: the rows finished before the cancel came from the checkpoint.
    local_prov = json.loads((demo_run / provenance).read_text())
    prov = json.loads((work / provenance).read_text())
    assert prov["rows"] == local_prov["rows"]
    reused = prov["reused_from_checkpoint"]
    assert rows_before <= reused < prov["rows"], (rows_before, prov)
    sent = sum(instance["requests"] for instance in prov["instances"])
    assert sent == prov["rows"] - reused, prov["instances"]  # none re-sent, none retried
    assert not checkpoint.exists(), "the checkpoint is deleted once the shard is written"
    for key in ("done", "failed", "generated_tokens", "finish_reasons", "retries"):
        assert prov[key] == local_prov[key], key

    # Identical: the whole shard file, not just its text (ids, seeds, attempts too).
    shard = shard_path(str(DEMO_ROOT), "generations", CANCEL_SOURCE, CANCEL_SHARD)
    assert shard.startswith(target + "/")
    assert (work / shard).read_bytes() == (demo_run / shard).read_bytes()


# --- MinHash buckets in several Slurm jobs (minhash.bucket_jobs) --------------------------

BUCKET_JOBS = {"minhash_buckets_00_04", "minhash_buckets_05_09", "minhash_buckets_10_13"}


def test_bucket_jobs_run_as_separate_slurm_jobs_with_the_same_results(
    slurm_run, demo_run, tmp_path
):
    """minhash.bucket_jobs: 3 in a copy of the Slurm run: three buckets jobs on the CPU
    partition, each a group of buckets; nothing upstream of them reruns (not a signature),
    and every MinHash, dedup and decontam file and the dataset's data are those of the
    local single-job run; with the same removal files, no filter or decontaminate job
    runs again."""
    work = tmp_path / "work"
    shutil.copytree(slurm_run.workdir, work, symlinks=True)
    shutil.rmtree(work / ".snakemake" / "slurm_logs", ignore_errors=True)
    (work / "jobs.yaml").write_text(yaml.safe_dump({"minhash": {"bucket_jobs": 3}}))
    config = ["--configfile", str(work / "config" / "config.yaml"), str(work / "jobs.yaml")]
    proc = run_snakemake(work, "--profile", str(PROFILE), *config, timeout=RUN_TIMEOUT_S)
    jobs = sacct_jobs(slurm_run_id(proc.stderr + proc.stdout), work)
    assert all(job.state == "COMPLETED" for job in jobs), [(j.comment, j.state) for j in jobs]
    rules = {job.rule for job in jobs}
    assert {job.rule for job in jobs if job.rule.startswith("minhash_buckets")} == BUCKET_JOBS
    assert rules.isdisjoint({"ingest", "prompts", "generate", "clean", "minhash_signature"})
    assert rules >= {"minhash_cluster", "dataset"}
    # The cluster job wrote the same removal files: no shard is filtered again.
    assert rules.isdisjoint({"minhash_filter", "decontaminate"}), rules
    cpu = profile_resources()["cpu_partition"]
    assert all(job.partition == cpu for job in jobs if job.rule in BUCKET_JOBS)

    one, several = demo_run / DEMO_ROOT, work / DEMO_ROOT
    for folder in ("minhash/buckets", "minhash/index", "minhash/remove", "dedup", "decontam"):
        files = sorted(p.relative_to(one) for p in (one / folder).rglob("*") if p.is_file())
        assert files, folder
        for rel in files:
            assert (several / rel).read_bytes() == (one / rel).read_bytes(), rel
    manifest = json.loads((several / "dataset" / "manifest.json").read_text())
    expected = json.loads((demo_run / MANIFEST).read_text())
    # The same data; the manifest's config records bucket_jobs, so the full root differs.
    assert manifest["data_root_sha256"] == expected["data_root_sha256"]
    assert manifest["files"] == expected["files"]
    assert manifest["config"]["minhash"]["bucket_jobs"] == 3
