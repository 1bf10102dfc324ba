"""The generate step end to end: real dummy engine processes, real HTTP, real files."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request

import polars as pl
import pytest

from cosmopedia import cli, generate
from cosmopedia.engines.sidecar import Sidecar
from cosmopedia.seeding import derive_seed

WORDS = [
    "river",
    "mountain",
    "history",
    "science",
    "music",
    "garden",
    "ocean",
    "planet",
    "library",
    "engine",
]
SETTINGS = {
    "dataset_version": "test/v0",
    "engine": "dummy",
    "endpoint_url": None,
    "model": "cosmopedia/dummy",
    "revision": "0",
    "concurrency": 8,
    "request_timeout_s": 60,
    "max_retries": 3,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.5,
    "startup_timeout_s": 30,
    "checkpoint_every": 4,
    "sampling": {
        "max_new_tokens": 2500,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 50,
        "repetition_penalty": 1.2,
    },
    "dummy": {"latency_per_token_s": 0.0, "max_concurrent": 128},
}


def settings(**changes) -> dict:
    merged = json.loads(json.dumps(SETTINGS))
    for key, value in changes.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
    return merged


def write_prompts(path, n: int = 30, empty: tuple[int, ...] = ()) -> pl.DataFrame:
    rows = []
    for i in range(n):
        rng = random.Random(i)
        extract = " ".join(
            f"The {rng.choice(WORDS)} near the {rng.choice(WORDS)} is known for its "
            f"{rng.choice(WORDS)} and {rng.choice(WORDS)}."
            for _ in range(4)
        )
        prompt = "" if i in empty else f'Here is an extract: "{extract}".\n\nWrite a blog post.'
        rows.append(
            {
                "id": f"demo-{i:04d}",
                "source": "demo",
                "family": "web_samples",
                "prompt": prompt,
                "seed_data": extract,
                "format": "blogpost",
                "audience": "general",
            }
        )
    random.Random(0).shuffle(rows)  # the output must come out sorted anyway
    df = pl.DataFrame(rows)
    df.write_parquet(path)
    return df


def job_paths(tmp_path, name: str) -> dict:
    return {
        "output": tmp_path / name / "gen.parquet",
        "provenance": tmp_path / name / "gen.provenance.json",
        "checkpoint": tmp_path / "work" / f"{name}.checkpoint.jsonl",
        "engine_log": tmp_path / "logs" / f"{name}.engine.log",
    }


def cli_args(prompts, config: dict, paths: dict) -> list[str]:
    argv = ["generate", "--prompts", str(prompts), "--settings", json.dumps(config)]
    for key, path in paths.items():
        argv += [f"--{key.replace('_', '-')}", str(path)]
    return argv


def run_cli(tmp_path, name: str, prompts, config: dict) -> tuple[int, dict]:
    """Run the step in this process as the workflow would: (exit code, paths)."""
    paths = job_paths(tmp_path, name)
    return cli.main(cli_args(prompts, config, paths)), paths


def start_job(prompts, config: dict, paths: dict, **popen) -> subprocess.Popen:
    """The step as a separate process (the job), to signal it or kill its engine."""
    command = [sys.executable, "-m", "cosmopedia.cli", *cli_args(prompts, config, paths)]
    return subprocess.Popen(command, **popen)


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        return json.loads(response.read())


def engine_pid(log_path) -> int:
    return int(re.findall(r"pid (\d+)", log_path.read_text())[-1])


def process_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for_engine_ok(log_path, count: int, timeout: float = 20.0) -> None:
    """Wait until the job's dummy engine has answered `count` generations."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = re.findall(r"'--port', '(\d+)'", log_path.read_text()) if log_path.exists() else []
        with contextlib.suppress(OSError):
            if port and stats(f"http://127.0.0.1:{port[-1]}")["ok"] >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"the engine never answered {count} requests")


def wait_for_lines(path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {count} lines")


@pytest.fixture(scope="module")
def dummy_server(tmp_path_factory):
    """A dummy engine started by the test, for the `endpoint` engine (its /stats counts)."""
    log_path = tmp_path_factory.mktemp("endpoint") / "engine.log"
    command = [sys.executable, "-m", "cosmopedia.cli", "serve-dummy"]
    command += ["--host", "{host}", "--port", "{port}"]
    with Sidecar(command, log_path, startup_timeout_s=30) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One fresh run with the dummy sidecar engine: (prompts, input frame, paths)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    prompts = tmp_path / "prompts.parquet"
    df = write_prompts(prompts)
    code, paths = run_cli(tmp_path, "first", prompts, SETTINGS)
    assert code == 0
    return prompts, df, paths


def test_end_to_end_output(reference):
    prompts, df, paths = reference
    out = pl.read_parquet(paths["output"])
    assert out.height == df.height
    assert out["id"].to_list() == sorted(df["id"].to_list())
    assert out.columns == [*df.columns, *generate.RESULT_SCHEMA]
    assert dict(out.select(list(generate.RESULT_SCHEMA)).schema) == generate.RESULT_SCHEMA
    assert out["error"].null_count() == out.height
    assert (out["attempts"] == 1).all()
    assert set(out["finish_reason"]) <= {"eos_token", "length"}
    assert out["seed"].to_list() == [derive_seed("test/v0", i) for i in out["id"]]
    assert out.join(df, on="id").filter(pl.col("prompt") != pl.col("prompt_right")).is_empty()
    assert not paths["checkpoint"].exists()

    prov = json.loads(paths["provenance"].read_text())
    assert prov["rows"] == prov["done"] == 30 and prov["failed"] == 0
    assert prov["engine"]["kind"] == "dummy" and prov["engine"]["info"]["engine"] == "dummy"
    assert prov["engine"]["command"][0] == "python"  # no absolute paths in outputs
    assert prov["generated_tokens"] == out["text_token_length"].sum()
    assert prov["sampling"] == SETTINGS["sampling"]
    assert set(prov["timings"]) == {"startup_s", "generation_s"}
    assert "dummy engine serving" in paths["engine_log"].read_text()


def test_rerun_is_byte_identical(reference, tmp_path):
    prompts, _, first = reference
    code, second = run_cli(tmp_path, "second", prompts, SETTINGS)
    assert code == 0
    assert second["output"].read_bytes() == first["output"].read_bytes()
    prov_a = json.loads(first["provenance"].read_text())
    prov_b = json.loads(second["provenance"].read_text())
    assert prov_a.pop("timings") and prov_b.pop("timings")
    assert prov_a == prov_b


def test_resume_reuses_checkpointed_rows(reference, dummy_server, tmp_path):
    prompts, _, first = reference
    config = settings(engine="endpoint", endpoint_url=dummy_server.url)
    done = pl.read_parquet(first["output"]).sort("id")
    checkpoint = tmp_path / "work" / "resume.checkpoint.jsonl"
    checkpoint.parent.mkdir()
    lines = []
    for row in done.head(12).iter_rows(named=True):
        key = generate.request_key(
            row["prompt"], row["seed"], config["model"], config["revision"], config["sampling"]
        )
        record = {name: row[name] for name in generate.RESULT_SCHEMA}
        lines.append(json.dumps({**record, "id": row["id"], "key": key, "transient": False}))
    # A stale line (another request for row 13) is ignored, and so is a line cut by a kill.
    lines.append(json.dumps({**json.loads(lines[0]), "id": done["id"][12], "key": "0" * 64}))
    checkpoint.write_text("\n".join(lines) + "\n" + lines[1][:40])

    before = stats(dummy_server.url)["requests"]
    code, paths = run_cli(tmp_path, "resume", prompts, config)
    assert code == 0
    assert stats(dummy_server.url)["requests"] - before == 30 - 12
    assert paths["output"].read_bytes() == first["output"].read_bytes()
    assert json.loads(paths["provenance"].read_text())["reused_from_checkpoint"] == 12
    assert not checkpoint.exists()


def test_changed_sampling_makes_the_checkpoint_stale(reference, dummy_server, tmp_path):
    prompts, _, first = reference
    done = pl.read_parquet(first["output"]).head(5)
    checkpoint = tmp_path / "work" / "stale.checkpoint.jsonl"
    checkpoint.parent.mkdir()
    with open(checkpoint, "w") as f:
        for row in done.iter_rows(named=True):
            # Keys of the requests made with the reference run's sampling settings.
            key = generate.request_key(
                row["prompt"], row["seed"], "cosmopedia/dummy", "0", SETTINGS["sampling"]
            )
            record = {name: row[name] for name in generate.RESULT_SCHEMA}
            f.write(json.dumps({**record, "id": row["id"], "key": key}) + "\n")
    config = settings(
        engine="endpoint", endpoint_url=dummy_server.url, sampling={"max_new_tokens": 64}
    )
    code, paths = run_cli(tmp_path, "stale", prompts, config)
    assert code == 0
    prov = json.loads(paths["provenance"].read_text())
    assert prov["reused_from_checkpoint"] == 0
    assert pl.read_parquet(paths["output"])["text_token_length"].max() <= 64


def test_validation_errors_fail_the_row_without_retry(dummy_server, tmp_path):
    prompts = tmp_path / "prompts.parquet"
    write_prompts(prompts, n=6, empty=(2,))
    config = settings(engine="endpoint", endpoint_url=dummy_server.url)
    before = stats(dummy_server.url)
    code, paths = run_cli(tmp_path, "invalid", prompts, config)
    after = stats(dummy_server.url)
    assert code == 0
    assert after["requests"] - before["requests"] == 6
    assert after["validation"] - before["validation"] == 1
    out = pl.read_parquet(paths["output"]).filter(pl.col("id") == "demo-0002").row(0, named=True)
    assert out["text"] is None and out["text_token_length"] is None
    assert out["finish_reason"] == "error" and out["attempts"] == 1
    assert out["error"] == "validation: Input validation error: `inputs` cannot be empty"
    prov = json.loads(paths["provenance"].read_text())
    assert (prov["done"], prov["failed"], prov["failures_by_cause"]) == (5, 1, {"validation": 1})
    assert prov["engine"]["kind"] == "endpoint" and prov["engine"]["command"] is None


def test_overloaded_requests_are_retried(reference, tmp_path):
    prompts, _, first = reference
    # 3 requests in flight against room for 2: the engine rejects some with 429.
    config = settings(
        concurrency=3,
        max_retries=30,
        backoff_base_s=0.02,
        backoff_max_s=0.2,
        dummy={"latency_per_token_s": 0.0001, "max_concurrent": 2},
    )
    code, paths = run_cli(tmp_path, "overloaded", prompts, config)
    assert code == 0
    prov = json.loads(paths["provenance"].read_text())
    assert prov["failed"] == 0 and prov["retries"] > 0
    out = pl.read_parquet(paths["output"])
    assert out["attempts"].max() > 1
    expected = pl.read_parquet(first["output"]).drop("attempts")
    assert out.drop("attempts").equals(expected)


def test_sigterm_keeps_finished_rows_and_stops_the_engine(reference, tmp_path):
    prompts, _, first = reference
    # About 0.5 s per request and 2 in flight: the job is still busy when it is stopped.
    # No periodic flush before the signal: the rows must be saved by the flush at exit.
    config = settings(concurrency=2, checkpoint_every=1000, dummy={"latency_per_token_s": 0.001})
    paths = job_paths(tmp_path, "job")
    job = start_job(prompts, config, paths, stderr=subprocess.DEVNULL)
    try:
        wait_for_engine_ok(paths["engine_log"], 3)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        job.kill()
        job.wait()
    assert process_gone(engine_pid(paths["engine_log"]))
    assert not paths["output"].exists()
    kept = [json.loads(line) for line in paths["checkpoint"].read_text().splitlines()]
    assert 1 <= len(kept) < 30

    # The rerun sends only the missing rows and ends with the same output as a fresh run.
    assert cli.main(cli_args(prompts, settings(), paths)) == 0
    prov = json.loads(paths["provenance"].read_text())
    assert prov["reused_from_checkpoint"] == len(kept)
    assert paths["output"].read_bytes() == first["output"].read_bytes()
    assert not paths["checkpoint"].exists()


def test_engine_death_aborts_the_job(reference, tmp_path):
    prompts, _, _ = reference
    config = settings(concurrency=2, checkpoint_every=1, dummy={"latency_per_token_s": 0.001})
    paths = job_paths(tmp_path, "job")
    job = start_job(prompts, config, paths, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(paths["checkpoint"], 2)
        os.kill(engine_pid(paths["engine_log"]), signal.SIGKILL)
        _, stderr = job.communicate(timeout=20)
    finally:
        job.kill()
        job.wait()
    assert job.returncode != 0
    assert "the engine exited" in stderr
    assert not paths["output"].exists()
    assert len(paths["checkpoint"].read_text().splitlines()) >= 2


def test_settings_are_checked(reference, tmp_path):
    prompts, _, _ = reference
    broken = settings()
    del broken["sampling"]["top_k"]
    assert run_cli(tmp_path, "broken", prompts, broken)[0] == 2
    with pytest.raises(cli.CliError, match="missing: top_k"):
        generate.validate_settings(broken)
    with pytest.raises(cli.CliError, match="unknown keys: temprature"):
        generate.validate_settings({**settings(), "temprature": 1})
    with pytest.raises(cli.CliError, match="endpoint_url"):
        generate.validate_settings(settings(engine="endpoint"))
