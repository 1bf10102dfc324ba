"""The generate step end to end: real dummy engine processes, real HTTP, real files."""

from __future__ import annotations

import contextlib
import hashlib
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

from cosmopedia import cli
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.generation import engines
from cosmopedia.generation.dummy.text import generate_text
from cosmopedia.generation.requests import RESULT_SCHEMA, request_key
from cosmopedia.generation.sidecar import Sidecar
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
    "api": None,
    "endpoint_url": None,
    "model": "cosmopedia/dummy",
    "revision": "0",
    "chat_template": None,
    "instances": 1,
    "gpus_per_instance": 1,
    "concurrency": 8,
    "request_timeout_s": 60,
    "max_retries": 3,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.5,
    "startup_timeout_s": 30,
    "checkpoint_every": 4,
    "server": {
        "max_concurrent_requests": 128,
        "max_input_tokens": 4096,
        "max_total_tokens": 8192,
        "launcher": "native",
        "image": None,
        "image_digest": "auto",
        "mounts": [],
        "launcher_args": [],
        "program": None,
        "extra_args": [],
        "env": {},
        "fatal_log_patterns": None,
        "stop_grace_s": 5,
    },
    "sampling": {
        "max_new_tokens": 2500,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 50,
        "repetition_penalty": 1.2,
    },
    "dummy": {
        "latency_per_token_s": 0.0,
        "max_concurrent": 128,
        "max_batch": None,
        "faults": {
            "seed": 0,
            "rate_429": 0.0,
            "rate_503": 0.0,
            "rate_reset": 0.0,
            "rate_hang": 0.0,
            "crash_after": 0,
        },
    },
}
# The schema's defaults of generation.server.
SERVER_DEFAULTS = step_settings.validate({}, step_settings.subschema(("generation", "server")), "")


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def settings(**changes) -> dict:
    """SETTINGS with `changes` merged in (nested objects key by key)."""
    merged = _merge(json.loads(json.dumps(SETTINGS)), changes)
    if merged["engine"] == "endpoint" and "stop_grace_s" not in changes.get("server", {}):
        # The endpoint engine stops no server: a stop grace other than the default is
        # a setting it would ignore, refused.
        merged["server"]["stop_grace_s"] = SERVER_DEFAULTS["stop_grace_s"]
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


def job(config: dict) -> step_settings.Generate:
    """The generate step's settings (settings.Generate) of these flat settings."""
    generation = {k: v for k, v in config.items() if k != "dataset_version"}
    data = {"dataset_version": config["dataset_version"], "generation": generation}
    return step_settings.from_dict(step_settings.Generate, data)


def cli_args(prompts, config: dict, paths: dict) -> list[str]:
    settings_json = step_settings.canonical_json(job(config))
    argv = ["generate", "--prompts", str(prompts), "--settings", settings_json]
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


def engine_pids(log_path) -> list[int]:
    """Process group leaders (the engine guards) the sidecars logged."""
    return [
        int(pid) for pid in re.findall(r"pid (\d+) \(process group leader\)", log_path.read_text())
    ]


def engine_pid(log_path) -> int:
    return engine_pids(log_path)[-1]


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
    assert out.columns == [*df.columns, *RESULT_SCHEMA]
    assert dict(out.select(list(RESULT_SCHEMA)).schema) == RESULT_SCHEMA
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
    timings = prov["timings"]
    assert set(timings) == {"startup_s", "generation_s", "drain_s", "job_s"}
    # The drain is the stream's tail; the job holds its engine for start-up and stream.
    assert 0 < timings["drain_s"] <= timings["generation_s"]
    assert timings["job_s"] >= timings["startup_s"] + timings["generation_s"]
    usage = prov["usage"]
    assert usage["gpus"] == 0  # the dummy asks for no GPU: its time counts as engine-hours
    assert usage == {"gpus": 0, "rows": 30, "tokens": prov["generated_tokens"]}
    assert "dummy engine serving" in paths["engine_log"].read_text()


def test_rerun_is_byte_identical(reference, tmp_path):
    prompts, _, first = reference
    code, second = run_cli(tmp_path, "second", prompts, SETTINGS)
    assert code == 0
    assert second["output"].read_bytes() == first["output"].read_bytes()
    prov_a = json.loads(first["provenance"].read_text())
    prov_b = json.loads(second["provenance"].read_text())
    # Timings and the instances (ports, start-up times) describe one run.
    for key in ("timings", "instances"):
        assert prov_a.pop(key) and prov_b.pop(key)
    assert prov_a == prov_b


def test_resume_reuses_checkpointed_rows(reference, dummy_server, tmp_path):
    prompts, _, first = reference
    config = settings(engine="endpoint", endpoint_url=dummy_server.url)
    sampling = job(config).generation.sampling
    done = pl.read_parquet(first["output"]).sort("id")
    checkpoint = tmp_path / "work" / "resume.checkpoint.jsonl"
    checkpoint.parent.mkdir()
    lines = []
    for row in done.head(12).iter_rows(named=True):
        key = request_key(row["prompt"], row["seed"], config["model"], config["revision"], sampling)
        record = {name: row[name] for name in RESULT_SCHEMA}
        lines.append(json.dumps({**record, "id": row["id"], "key": key, "transient": False}))
    # A stale line (another request for row 13) is ignored, and so is a line cut by a kill.
    lines.append(json.dumps({**json.loads(lines[0]), "id": done["id"][12], "key": "0" * 64}))
    checkpoint.write_text("\n".join(lines) + "\n" + lines[1][:40])

    before = stats(dummy_server.url)["requests"]
    code, paths = run_cli(tmp_path, "resume", prompts, config)
    assert code == 0
    assert stats(dummy_server.url)["requests"] - before == 30 - 12
    assert paths["output"].read_bytes() == first["output"].read_bytes()
    prov = json.loads(paths["provenance"].read_text())
    assert prov["reused_from_checkpoint"] == 12
    # The run's usage counts only what it generated: reused rows cost this job nothing.
    reused_tokens = int(done.head(12)["text_token_length"].sum())
    assert prov["usage"]["rows"] == 18
    assert prov["usage"]["tokens"] == prov["generated_tokens"] - reused_tokens
    assert not checkpoint.exists()


def test_changed_sampling_makes_the_checkpoint_stale(reference, dummy_server, tmp_path):
    prompts, _, first = reference
    done = pl.read_parquet(first["output"]).head(5)
    checkpoint = tmp_path / "work" / "stale.checkpoint.jsonl"
    checkpoint.parent.mkdir()
    with open(checkpoint, "w") as f:
        for row in done.iter_rows(named=True):
            # Keys of the requests made with the reference run's sampling settings.
            sampling = job(SETTINGS).generation.sampling
            key = request_key(row["prompt"], row["seed"], "cosmopedia/dummy", "0", sampling)
            record = {name: row[name] for name in RESULT_SCHEMA}
            f.write(json.dumps({**record, "id": row["id"], "key": key}) + "\n")
    config = settings(
        engine="endpoint", endpoint_url=dummy_server.url, sampling={"max_new_tokens": 64}
    )
    code, paths = run_cli(tmp_path, "stale", prompts, config)
    assert code == 0
    prov = json.loads(paths["provenance"].read_text())
    assert prov["reused_from_checkpoint"] == 0
    out = pl.read_parquet(paths["output"])
    assert out["text_token_length"].max() <= 64
    # Texts cut at max_new_tokens stay in the output but count as failed in the report.
    cut = out.filter(pl.col("finish_reason") == "length").height
    assert cut > 0 and out.height == 30 and out["error"].null_count() == 30
    assert prov["failures_by_cause"] == {"length": cut}
    assert (prov["done"], prov["failed"]) == (30 - cut, cut)


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


def test_concurrency_is_capped_by_the_engine_capacity(reference, tmp_path):
    prompts, _, first = reference
    # Room for 2 sequences (its /info says so) against a limit of 6: the client keeps
    # exactly 2 in flight and never meets a 429.
    command = [sys.executable, "-m", "cosmopedia.cli", "serve-dummy", "--host", "{host}"]
    command += ["--port", "{port}", "--max-concurrent", "2", "--latency-per-token", "0.0002"]
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30) as server:
        config = settings(engine="endpoint", endpoint_url=server.url, concurrency=6)
        code, paths = run_cli(tmp_path, "capped", prompts, config)
        after = stats(server.url)
    assert code == 0
    assert after["overloaded"] == 0 and after["peak_in_flight"] == 2
    prov = json.loads(paths["provenance"].read_text())
    assert prov["client"]["concurrency"] == 2 and prov["client"]["concurrency_limit"] == 6
    assert paths["output"].read_bytes() == first["output"].read_bytes()


def test_overloaded_requests_are_retried(reference, tmp_path):
    prompts, _, first = reference
    # The engine answers 429 to a third of the requests (seeded, so reproducibly).
    config = settings(
        max_retries=30,
        backoff_base_s=0.02,
        backoff_max_s=0.2,
        dummy={"faults": {"seed": 3, "rate_429": 0.33}},
    )
    code, paths = run_cli(tmp_path, "overloaded", prompts, config)
    assert code == 0
    prov = json.loads(paths["provenance"].read_text())
    assert prov["failed"] == 0 and prov["retries"] > 0
    out = pl.read_parquet(paths["output"])
    assert out["attempts"].max() > 1
    expected = pl.read_parquet(first["output"]).drop("attempts")
    assert out.drop("attempts").equals(expected)
    # The same faults hit the same rows on a rerun.
    code, again = run_cli(tmp_path, "overloaded-again", prompts, config)
    assert code == 0
    assert again["output"].read_bytes() == paths["output"].read_bytes()


def test_sigterm_keeps_finished_rows_and_stops_the_engines(reference, tmp_path):
    prompts, _, first = reference
    # About 0.5 s per request, 2 engine instances with one request each: the job is still
    # busy when it is stopped. No periodic flush before the signal: the rows must be saved
    # by the flush at exit.
    config = settings(
        concurrency=2,
        instances=2,
        checkpoint_every=1000,
        dummy={"latency_per_token_s": 0.001},
    )
    paths = job_paths(tmp_path, "job")
    job = start_job(prompts, config, paths, stderr=subprocess.DEVNULL)
    try:
        wait_for_engine_ok(paths["engine_log"], 2)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        job.kill()
        job.wait()
    leaders = engine_pids(paths["engine_log"])
    assert len(leaders) == 2 and all(process_gone(pid) for pid in leaders)
    assert paths["engine_log"].read_text().count("# sidecar: stopped") == 2
    assert not paths["output"].exists()
    kept = [json.loads(line) for line in paths["checkpoint"].read_text().splitlines()]
    assert 1 <= len(kept) < 30

    # The rerun sends only the missing rows and ends with the same output as a fresh run.
    assert cli.main(cli_args(prompts, settings(), paths)) == 0
    prov = json.loads(paths["provenance"].read_text())
    assert prov["reused_from_checkpoint"] == len(kept)
    assert paths["output"].read_bytes() == first["output"].read_bytes()
    assert not paths["checkpoint"].exists()


def test_sigkill_of_the_job_leaves_no_engine(reference, tmp_path):
    prompts, _, _ = reference
    config = settings(concurrency=2, dummy={"latency_per_token_s": 0.001})
    paths = job_paths(tmp_path, "job")
    job = start_job(prompts, config, paths, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_engine_ok(paths["engine_log"], 2)
        os.killpg(job.pid, signal.SIGKILL)  # no cleanup by the job itself
        job.wait(timeout=20)
    finally:
        job.kill()
        job.wait()
    leader = engine_pid(paths["engine_log"])
    deadline = time.monotonic() + 15
    while not process_gone(leader) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(leader)  # its guard saw the job die and stopped it


def test_crashing_engine_fails_the_job_and_the_retry_resumes(reference, tmp_path):
    prompts, _, first = reference
    config = settings(concurrency=2, dummy={"faults": {"crash_after": 12}})
    paths = job_paths(tmp_path, "job")
    job = start_job(prompts, config, paths, stderr=subprocess.PIPE, text=True)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode != 0
    assert "engine instance 0 exited (code 70)" in stderr
    kept = paths["checkpoint"].read_text().splitlines()
    assert 9 <= len(kept) <= 11  # 11 answered, at most one other in flight when it died
    # Snakemake's retry (here without the crash) resumes from the checkpoint.
    assert cli.main(cli_args(prompts, settings(), paths)) == 0
    assert paths["output"].read_bytes() == first["output"].read_bytes()
    assert json.loads(paths["provenance"].read_text())["reused_from_checkpoint"] == len(kept)


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
    assert "engine instance 0 exited" in stderr
    # The guard was killed, not the server under it: the job still stopped its group.
    assert process_gone(engine_pid(paths["engine_log"]))
    assert not paths["output"].exists()
    assert len(paths["checkpoint"].read_text().splitlines()) >= 2


def test_settings_are_checked(reference, tmp_path):
    prompts, _, _ = reference
    generation = {k: v for k, v in settings().items() if k != "dataset_version"}
    broken = {"dataset_version": "test/v0", "generation": {**generation, "temprature": 1}}
    argv = ["generate", "--prompts", str(prompts), "--settings", json.dumps(broken)]
    for key, path in job_paths(tmp_path, "broken").items():
        argv += [f"--{key.replace('_', '-')}", str(path)]
    assert cli.main(argv) == 2
    with pytest.raises(CliError, match="Additional properties are not allowed .'temprature'"):
        job({**settings(), "temprature": 1})
    with pytest.raises(CliError, match="endpoint_url"):
        engines.check(job(settings(engine="endpoint")))


FAULT_CAUSES = {"overloaded", "unavailable", "connection", "timeout"}


@pytest.mark.parametrize("api", ["tgi", "openai"])
def test_faulty_engine_every_row_done_or_failed_with_cause(tmp_path, api):
    """10% 429, 5% 503, 3% connection resets, 1% hangs: the job still succeeds."""
    prompts = tmp_path / "prompts.parquet"
    df = write_prompts(prompts, n=150)
    command = [sys.executable, "-m", "cosmopedia.cli", "serve-dummy", "--host", "{host}"]
    command += ["--port", "{port}", "--fault-seed", "7", "--fault-429", "0.10"]
    command += ["--fault-503", "0.05", "--fault-reset", "0.03", "--fault-hang", "0.01"]
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30, smoke=None) as server:
        config = settings(
            engine="endpoint",
            endpoint_url=server.url,
            api=api,
            concurrency=16,
            request_timeout_s=1.0,  # a hung request is given up after 1 s, then retried
            max_retries=4,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
        )
        code, paths = run_cli(tmp_path, "faulty", prompts, config)
        served = stats(server.url)
    assert code == 0
    injected = served["injected"]
    assert injected["hang"] >= 1 and injected["reset"] >= 1
    assert injected["overloaded"] >= 5 and injected["unavailable"] >= 3

    out = pl.read_parquet(paths["output"])
    assert out.height == 150 and out["id"].to_list() == sorted(df["id"].to_list())
    for row in out.iter_rows(named=True):
        if row["error"] is None:
            text, tokens, _ = generate_text(row["prompt"], row["seed"], 2500)
            assert (row["text"], row["text_token_length"]) == (text, tokens)
        else:  # retries ran out: the row says why
            assert row["error"].split(":", 1)[0] in FAULT_CAUSES and row["attempts"] == 5
    # Every request the engine saw is an attempt of some row: none lost, none uncounted.
    assert served["requests"] == out["attempts"].sum()
    prov = json.loads(paths["provenance"].read_text())
    assert prov["done"] + prov["failed"] == 150 and prov["done"] >= 145
    assert set(prov["failures_by_cause"]) <= FAULT_CAUSES
    assert prov["retries"] == out["attempts"].sum() - 150 >= 20


def settle(url: str, quiet_s: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until the server has nothing in flight and no new request for `quiet_s`."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = stats(url)
        if now["requests"] != last or now["in_flight"]:
            last, since = now["requests"], time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError("the server never settled")


def valid_checkpoint_ids(path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            ids.append(json.loads(line)["id"])
    return ids


def test_sigkill_at_random_points_loses_only_requests_in_flight(reference, tmp_path):
    """Kill the job's process group at random moments, rerun until done: the shard is
    byte-identical to an uninterrupted run and only requests in flight were sent twice."""
    prompts, _, first = reference
    concurrency = 4
    command = [sys.executable, "-m", "cosmopedia.cli", "serve-dummy", "--host", "{host}"]
    command += ["--port", "{port}", "--latency-per-token", "0.0004"]
    rng = random.Random(20240611)
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30, smoke=None) as server:
        config = settings(
            engine="endpoint", endpoint_url=server.url, concurrency=concurrency, checkpoint_every=8
        )
        paths = job_paths(tmp_path, "killed")
        in_flight_at_kills = []
        for _ in range(3):
            recorded_before = len(valid_checkpoint_ids(paths["checkpoint"]))
            sent_before = stats(server.url)["requests"]
            kill_after = rng.randint(1, 30 - recorded_before - concurrency)
            job = start_job(
                prompts, config, paths, stderr=subprocess.DEVNULL, start_new_session=True
            )
            try:
                deadline = time.monotonic() + 30
                while stats(server.url)["requests"] - sent_before < kill_after:
                    assert time.monotonic() < deadline and job.poll() is None
                    time.sleep(rng.uniform(0.0, 0.05))
                os.killpg(job.pid, signal.SIGKILL)
                job.wait(timeout=20)
            finally:
                job.kill()
                job.wait()
            settle(server.url)  # requests already on the wire reach the server
            ids = valid_checkpoint_ids(paths["checkpoint"])
            assert len(ids) == len(set(ids))  # no row recorded twice
            sent = stats(server.url)["requests"] - sent_before
            in_flight = sent - (len(ids) - recorded_before)
            assert 0 <= in_flight <= concurrency
            in_flight_at_kills.append(in_flight)
        assert not paths["output"].exists()

        assert cli.main(cli_args(prompts, config, paths)) == 0
        served = stats(server.url)
    assert paths["output"].read_bytes() == first["output"].read_bytes()
    # Requests the server saw twice: exactly those in flight when the job was killed.
    assert served["repeats"] == sum(in_flight_at_kills)
    assert served["requests"] == 30 + sum(in_flight_at_kills)
    assert served["ok"] + served["disconnected"] == served["requests"]


def smoke_faults(attempts_faulted: int, rate: float = 0.5) -> dict:
    """Dummy fault settings under which the first `attempts_faulted` smoke requests (as
    probes.tgi_smoke_payload sends them) meet a 503 and the next one, if any, does not."""
    from cosmopedia.generation import probes
    from cosmopedia.generation.dummy.faults import Faults

    def draw(seed: int, attempt: int) -> str | None:
        raw = json.dumps(probes.tgi_smoke_payload(attempt)).encode()
        request_hash = hashlib.sha256(b"generate\0" + raw).hexdigest()
        return Faults(seed=seed, rate_503=rate).draw(request_hash, 0)

    for seed in range(1000):
        faulted = [draw(seed, a) == "unavailable" for a in range(1, attempts_faulted + 2)]
        if all(faulted[:-1]) and not faulted[-1]:
            return {"seed": seed, "rate_503": rate}
    raise AssertionError("no such fault seed")


def test_a_fault_on_the_smoke_request_is_retried_with_another_seed(reference, tmp_path):
    """The same smoke request on every fresh server would meet the same injected fault on
    every rerun: each attempt asks with another seed, retried with backoff."""
    prompts, _, _ = reference
    config = settings(max_retries=8, dummy={"faults": smoke_faults(2)})
    code, paths = run_cli(tmp_path, "smoke", prompts, config)
    assert code == 0
    assert json.loads(paths["provenance"].read_text())["rows"] == 30


def test_a_smoke_request_that_never_succeeds_fails_the_job(reference, tmp_path):
    prompts, _, _ = reference
    config = settings(max_retries=2, dummy={"faults": smoke_faults(3, rate=0.9)})
    paths = job_paths(tmp_path, "job")
    job = start_job(prompts, config, paths, stderr=subprocess.PIPE, text=True)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode != 0
    assert "smoke request to" in stderr and "(attempt 3 of 3): HTTP 503" in stderr


def test_previous_output_is_reused_and_failed_rows_are_sent_again_on_request(reference, tmp_path):
    """A rerun of a finished shard (Snakemake deleted its output) reuses the previous
    output's rows, failed ones included; with retry_failed it sends just the failed rows."""
    prompts, _, first = reference
    faults = {"faults": {"rate_503": 0.4, **smoke_faults(0, rate=0.4)}}
    paths = job_paths(tmp_path, "job")
    extra = {
        "previous": tmp_path / "job.previous",
        "retry_state": tmp_path / "job.retry.json",
    }

    def run(config, retry_param=""):
        argv = cli_args(prompts, config, paths)
        argv += ["--previous", str(extra["previous"]), "--retry-state", str(extra["retry_state"])]
        assert cli.main([*argv, f"--retry-param={retry_param}"]) == 0
        paths["output"].unlink()  # as Snakemake does before the job runs again
        return json.loads(paths["provenance"].read_text())

    prov = run(settings(max_retries=0, dummy=faults))
    failed = prov["failed"]
    assert failed > 0 and prov["failures_by_cause"] == {"unavailable": failed}
    failed_output = (extra["previous"] / "generations.parquet").read_bytes()
    state = json.loads(extra["retry_state"].read_text())
    assert state == {
        "failed_rows": failed,
        "failures_by_cause": {"unavailable": failed},
        "retry_param": "",
    }

    # Rerun without retry_failed (--forcerun): every row reused, the failed ones as failed.
    prov = run(settings(max_retries=0, dummy=faults))
    assert prov["reused_from_previous_output"] == 30 and prov["instances"][0]["requests"] == 0
    assert (extra["previous"] / "generations.parquet").read_bytes() == failed_output

    # retry_failed: the failed rows and nothing else, with their earlier attempt counted.
    prov = run(settings(retry_failed=True), retry_param="retry 1")
    assert prov["failed_rows_sent_again"] == failed and prov["failed"] == 0
    assert prov["instances"][0]["requests"] == failed
    assert prov["reused_from_previous_output"] == 30 - failed
    out = pl.read_parquet(extra["previous"] / "generations.parquet")
    assert out.drop("attempts").equals(pl.read_parquet(first["output"]).drop("attempts"))
    assert out["attempts"].sum() == 30 + failed
    state = json.loads(extra["retry_state"].read_text())
    assert state == {"failed_rows": 0, "failures_by_cause": {}, "retry_param": "retry 1"}
    # A shard without failed rows that never ran with a retry param has no state file.
    run(settings())
    assert not extra["retry_state"].exists()
