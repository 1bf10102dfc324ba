"""Failed rows are kept and retried: after a run whose engine failed some requests, a run
with generation.retry_failed reruns exactly the shards with failed rows, each job sends
exactly those rows again (counted by the dummy engine) and reuses the others, and the
dataset equals the one of a run that never failed."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_ROOT, make_workdir, planned_jobs, run_snakemake
from cosmopedia.generation import probes
from cosmopedia.generation.dummy.faults import Faults

pytestmark = pytest.mark.e2e

RATE_503 = 0.4


def faults() -> dict:
    """A 503 to 40% of the requests (drawn from a hash of each request), but not to the
    first smoke request of a job (max_retries 0 leaves it one attempt)."""
    for seed in range(1000):
        raw = json.dumps(probes.tgi_smoke_payload(1)).encode()
        request_hash = hashlib.sha256(b"generate\0" + raw).hexdigest()
        if Faults(seed=seed, rate_503=RATE_503).draw(request_hash, 0) is None:
            return {"seed": seed, "rate_503": RATE_503}
    raise AssertionError("no such seed")


def demo(workdir, generation: dict) -> None:
    """The demo's stories (two shards), light MinHash settings, and `generation`."""
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["sources"] = {"stories": config["sources"]["stories"]}
    config["minhash"] = {"tokenizer": "whitespace", "num_buckets": 1}
    config["generation"] = {**config["generation"], "backoff_base_s": 0.01, **generation}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def configfiles(workdir, extra: dict | None = None) -> list[str]:
    """--configfile arguments: the config, and `extra` merged over it (as a user would)."""
    files = [str(workdir / "config" / "config.yaml")]
    if extra is not None:
        path = workdir / "extra.yaml"
        path.write_text(yaml.safe_dump(extra))
        files.append(str(path))
    return ["--configfile", *files]


def provenances(workdir) -> dict[str, dict]:
    root = workdir / DEMO_ROOT / "generations" / "stories"
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/provenance.json")}


def engine_requests(workdir) -> dict[str, list[int]]:
    """Per shard, the generation requests each dummy engine it started was sent (the
    stats line a dummy engine logs when it stops), oldest first."""
    logs = (workdir / DEMO_ROOT / "logs" / "generate" / "stories").glob("*.engine.log")
    return {
        log.name.removesuffix(".engine.log"): [
            json.loads(m)["requests"]
            for m in re.findall(r"dummy engine stats: (\{.*\})", log.read_text())
        ]
        for log in logs
    }


def release(workdir) -> dict:
    manifest = json.loads((workdir / DEMO_ROOT / "dataset" / "manifest.json").read_text())
    files = {f["path"]: f["sha256"] for f in manifest["files"]}
    removed = {f["path"]: f["sha256"] for f in manifest["other_files"] if "removed" in f["path"]}
    return {"data_root": manifest["data_root_sha256"], "files": files, "removed": removed}


def test_a_retry_run_sends_exactly_the_failed_rows_again(tmp_path):
    faulty = make_workdir(tmp_path / "faulty")
    # One attempt per row: a failed row was sent once.
    demo(faulty, {"max_retries": 0, "dummy": {"faults": faults()}})
    run_snakemake(faulty, "--cores", "2")
    first = provenances(faulty)
    failed = {shard: prov["failed"] for shard, prov in first.items()}
    assert sum(failed.values()) > 0, failed
    for prov in first.values():
        assert set(prov["failures_by_cause"]) <= {"unavailable"}

    # No shard reruns by itself: not for its failed rows, not for the (operational) fault
    # settings (the dataset step, which records the whole config, does).
    no_faults = {"generation": {"dummy": {"faults": {"rate_503": 0.0}}}}
    assert "generate" not in planned_jobs(faulty, *configfiles(faulty, no_faults))
    retry = {"generation": {"retry_failed": True, **no_faults["generation"]}}
    jobs = planned_jobs(faulty, *configfiles(faulty, retry))
    assert jobs.get("generate") == sum(n > 0 for n in failed.values())

    before = engine_requests(faulty)
    run_snakemake(faulty, "--cores", "2", *configfiles(faulty, retry))
    after = engine_requests(faulty)
    second = provenances(faulty)
    for shard, n in failed.items():
        if n == 0:
            assert after[shard] == before[shard]  # not rerun
            continue
        # One new engine: its smoke request (no faults now) and exactly the failed rows.
        assert len(after[shard]) == len(before[shard]) + 1
        assert after[shard][-1] == 1 + n
        prov = second[shard]
        assert prov["failed_rows_sent_again"] == n and prov["failed"] == 0
        assert prov["reused_from_previous_output"] == prov["rows"] - n
        assert prov["instances"][0]["requests"] == n

    # Done: nothing left to retry, and no shard reruns with or without retry_failed.
    assert planned_jobs(faulty, *configfiles(faulty, retry)) == {}
    assert "generate" not in planned_jobs(faulty, *configfiles(faulty, no_faults))
    assert "generate" not in planned_jobs(faulty)

    clean = make_workdir(tmp_path / "clean")
    demo(clean, {})
    run_snakemake(clean, "--cores", "2")
    assert release(faulty) == release(clean)


def test_the_retry_param_changes_only_for_shards_with_failed_rows(tmp_path):
    """Planning: the param is what the shard's last job ran with, except with retry_failed
    for a shard with failed rows; shards without a state file get ""."""
    from cosmopedia import layout, plan

    root = str(tmp_path / "results" / "n" / "v")

    def state(shard, ran_with, failed):
        path = layout.shard_path(root, "generation_retry", "src", shard)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"retry_param": ran_with, "failed_rows": failed}))

    state("a", "", 3)  # failed rows, never retried
    state("b", "retry 2 failed rows 0123", 0)  # retried, nothing failed since
    state("c", "retry 2 failed rows 0123", 1)  # retried, one row failed again
    assert plan.generate_retry_params(root, False) == {
        "src/a": "",
        "src/b": "retry 2 failed rows 0123",
        "src/c": "retry 2 failed rows 0123",
    }
    retry = plan.generate_retry_params(root, True)
    assert retry["src/b"] == "retry 2 failed rows 0123"
    assert retry["src/a"].startswith("retry 3 failed rows ")
    assert retry["src/c"].startswith("retry 1 failed rows ")
    assert retry["src/c"] != "retry 2 failed rows 0123"
    # The job runs with the new value and records it: the next plan is stable.
    state("a", retry["src/a"], 0)
    assert plan.generate_retry_params(root, True)["src/a"] == retry["src/a"]
    assert plan.generate_retry_params(root, False)["src/a"] == retry["src/a"]
