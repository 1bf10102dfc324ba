"""Engines behind one interface: the TGI, vLLM and SGLang launch templates run with the
dummy as their program (`tests/mimic.py`), several instances per job with the
least-loaded spreading, the OpenAI-compatible routes, chat templates, image digests and
redaction. Real subprocesses and real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import make_workdir, run_snakemake
from cosmopedia import cli, plan, redact
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.generation import engines
from cosmopedia.generation.dummy.text import CHAT_TEMPLATE, apply_chat_template, generate_text
from cosmopedia.generation.engines.served import recorded
from cosmopedia.generation.engines.tgi import TgiEngine
from cosmopedia.generation.stream import Instance, Stream
from cosmopedia.seeding import derive_seed
from test_generate import (
    SETTINGS,
    cli_args,
    job,
    job_paths,
    run_cli,
    settings,
    start_job,
    write_prompts,
)

MIMIC_PY = str(Path(__file__).resolve().parent / "mimic.py")
MIMIC = [sys.executable, MIMIC_PY]
LATENCY = ["--dummy-latency-per-token", "0.0002"]
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.parquet"
    return path, write_prompts(path, n=24)


def expected_texts(df: pl.DataFrame, chat: bool = False) -> dict[str, tuple[str, int]]:
    """The dummy's text and token count of every row, from the pure function."""
    texts = {}
    for row_id, prompt in zip(df["id"], df["prompt"], strict=True):
        sent = apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
        text, tokens, _ = generate_text(sent, derive_seed("test/v0", row_id), 2500)
        texts[row_id] = (text, tokens)
    return texts


def output_texts(path) -> dict[str, tuple[str, int]]:
    out = pl.read_parquet(path)
    return {r["id"]: (r["text"], r["text_token_length"]) for r in out.iter_rows(named=True)}


def test_tgi_template_two_instances_on_their_own_gpus(prompts, tmp_path, monkeypatch):
    path, df = prompts
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    # Two TGI servers x 2 GPUs, 3 sequences each: the client keeps 6 in flight, and a
    # request sent to a full server would be answered 429 (a retry): there must be none.
    config = settings(
        engine="tgi",
        instances=2,
        gpus_per_instance=2,
        concurrency=64,
        server={
            "program": [*MIMIC, "tgi"],
            "extra_args": LATENCY,
            "max_concurrent_requests": 3,
        },
    )
    code, paths = run_cli(tmp_path, "tgi", path, config)
    assert code == 0
    assert output_texts(paths["output"]) == expected_texts(df)
    prov = json.loads(paths["provenance"].read_text())
    assert prov["retries"] == 0 and prov["failed"] == 0
    assert prov["client"]["concurrency"] == 6 and prov["client"]["engine_capacity"] == 6

    engine = prov["engine"]
    assert (engine["kind"], engine["api"], engine["route"]) == ("tgi", "tgi", "/generate")
    assert engine["info"]["mimic"] == "tgi" and engine["image"] is None
    command = engine["command"]
    assert command[:3] == ["python", MIMIC_PY, "tgi"]
    assert command[3:] == [*TgiEngine.arguments, *LATENCY]
    assert command[command.index("--usage-stats") :][:2] == ["--usage-stats", "off"]

    instances = prov["instances"]
    assert [i["gpus"] for i in instances] == [["4", "5"], ["6", "7"]]
    assert [i["env"]["CUDA_VISIBLE_DEVICES"] for i in instances] == ["4,5", "6,7"]
    assert all(i["requests"] > 0 for i in instances)
    assert sum(i["requests"] for i in instances) == 24

    def flag(instance, name):
        return instance["command"][instance["command"].index(name) + 1]

    for name in ("--port", "--master-port", "--prometheus-port", "--shard-uds-path"):
        assert flag(instances[0], name) != flag(instances[1], name), name
    for instance in instances:  # the shard sockets are gone with the servers
        uds = flag(instance, "--shard-uds-path")
        assert not [f for f in os.listdir("/tmp") if f.startswith(os.path.basename(uds))]
    log_text = paths["engine_log"].read_text()
    assert "[0] mimic tgi: CUDA_VISIBLE_DEVICES=4,5 shards=2" in log_text
    assert "[1] mimic tgi: CUDA_VISIBLE_DEVICES=6,7 shards=2" in log_text


def test_least_loaded_instance_gets_the_next_request():
    servers = [engines.Server(0, "a", 4, {}), engines.Server(1, "b", 2, {})]
    instances = [Instance(server, None) for server in servers]
    stream = Stream(job(SETTINGS).generation, instances, 6, None, 0, 0)

    def send() -> int:
        instance = stream._pick()
        instance.in_flight += 1
        instance.sent += 1
        return instance.index

    assert [send() for _ in range(6)] == [0, 1, 0, 1, 0, 0]  # by load, then by use
    assert [i.in_flight for i in instances] == [4, 2]  # each exactly at its capacity
    instances[1].in_flight -= 1  # a request on the smaller server finishes
    assert send() == 1


def fake_apptainer(bin_dir) -> None:
    """An `apptainer` that checks `exec --nv [--bind X]... IMAGE` and runs the command."""
    bin_dir.mkdir()
    script = bin_dir / "apptainer"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "assert args.pop(0) == 'exec'\n"
        "flags = []\n"
        "while args[0].startswith('--'):\n"
        "    flag = args.pop(0)\n"
        "    flags.append(flag if flag != '--bind' else f'{flag} {args.pop(0)}')\n"
        "image = args.pop(0)\n"
        "if not os.path.isfile(image):\n"
        "    sys.exit(f'FATAL: no image {image}')\n"
        "print(f'fake apptainer: {os.path.basename(image)} {flags}', flush=True)\n"
        "os.execvp(args[0], args)\n"
    )
    script.chmod(0o755)


def test_vllm_template_in_an_apptainer_image(prompts, tmp_path, monkeypatch):
    path, df = prompts
    fake_apptainer(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    image = tmp_path / "images" / "vllm-0.11.sif"
    image.parent.mkdir()
    image.write_bytes(b"not really a SIF image" * 1000)
    mount = f"{tmp_path / 'cache'}:/data"
    config = settings(
        engine="vllm",
        concurrency=64,
        server={
            "launcher": "apptainer",
            "image": str(image),
            "mounts": [mount],
            "program": [*MIMIC, "vllm"],
            "extra_args": LATENCY,
            "max_concurrent_requests": 4,
            "env": {"HF_HUB_OFFLINE": "1"},
        },
    )
    code, paths = run_cli(tmp_path, "vllm", path, config)
    assert code == 0
    texts = output_texts(paths["output"])
    assert texts == expected_texts(df)
    assert set(pl.read_parquet(paths["output"])["finish_reason"]) <= {"stop", "length"}
    prov = json.loads(paths["provenance"].read_text())
    engine = prov["engine"]
    assert (engine["api"], engine["route"], engine["info"]) == ("openai", "/v1/completions", None)
    assert engine["command"][:6] == ["apptainer", "exec", "--nv", "--bind", mount, "{image}"]
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert engine["image"] == {"name": "vllm-0.11.sif", "digest": f"sha256:{digest}"}
    # vLLM has no /info: the capacity is the --max-num-seqs the job passed.
    assert prov["client"]["concurrency"] == 4
    assert prov["instances"][0]["env"] == {"HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0"}
    assert "fake apptainer: vllm-0.11.sif ['--nv', '--bind " in paths["engine_log"].read_text()


def test_sglang_chat_template_from_the_server_equals_the_template_file(prompts, tmp_path):
    path, df = prompts
    # The model's template sits in a local Hugging Face cache, as after a pre-download.
    snapshot = tmp_path / "hub" / "models--cosmopedia--dummy" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    template_sha = hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest()

    config = settings(
        engine="sglang",
        revision=REVISION,
        chat_template="server",
        server={"program": [*MIMIC, "sglang"], "extra_args": LATENCY},
    )
    server_paths = job_paths(tmp_path, "server")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "CUDA_VISIBLE_DEVICES": "0"}
    job = start_job(path, config, server_paths, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 0, stderr
    prov = json.loads(server_paths["provenance"].read_text())
    assert prov["engine"]["route"] == "/v1/chat/completions"
    assert prov["engine"]["chat_template"] == {
        "mode": "server",
        "sha256": template_sha,
        "source": f"hf-cache:cosmopedia/dummy@{REVISION}/tokenizer_config.json",
    }
    # SGLang reads top_k and repetition_penalty as extra fields of its chat route.
    assert prov["engine"]["request"] == {
        "path": "/v1/chat/completions",
        "parameters": {
            "max_tokens": 2500,
            "temperature": 0.6,
            "top_p": 0.95,
            "top_k": 50,
            "repetition_penalty": 1.2,
        },
    }

    # The same template as a file: the client renders it and sends plain text to /generate.
    template_file = tmp_path / "chat.jinja"
    template_file.write_text(CHAT_TEMPLATE)
    code, file_paths = run_cli(
        tmp_path, "file", path, settings(revision=REVISION, chat_template=str(template_file))
    )
    assert code == 0
    prov = json.loads(file_paths["provenance"].read_text())
    assert prov["engine"]["route"] == "/generate"
    assert prov["engine"]["chat_template"] == {
        "mode": "file",
        "sha256": template_sha,
        "source": "chat.jinja",
        "bos": "",
        "eos": "",
    }
    expected = expected_texts(df, chat=True)
    assert output_texts(server_paths["output"]) == expected
    assert output_texts(file_paths["output"]) == expected


def test_dummy_chat_route_gets_every_sampling_parameter(prompts, tmp_path):
    path, _ = prompts
    code, paths = run_cli(tmp_path, "chat", path, settings(chat_template="server"))
    assert code == 0
    engine = json.loads(paths["provenance"].read_text())["engine"]
    assert engine["route"] == "/v1/chat/completions"
    assert set(engine["request"]["parameters"]) >= {"top_k", "repetition_penalty"}
    assert engine["chat_template"]["sha256"] is None  # not in any local cache


def test_launch_settings_are_checked(prompts, tmp_path, monkeypatch):
    path, _ = prompts
    bad = {
        "unknown placeholders": settings(engine="tgi", server={"extra_args": ["--x", "{prot}"]}),
        "needs server.image": settings(engine="vllm", server={"launcher": "apptainer"}),
        "server.launcher: engine dummy would ignore it": settings(
            server={"launcher": "pyxis", "image": "x"}
        ),
        "secrets stay": settings(engine="tgi", server={"env": {"HF_TOKEN": "hf_x"}}),
        "max_new_tokens must be <": settings(engine="sglang", server={"max_total_tokens": 2000}),
        "max_input_tokens must be <": settings(
            engine="tgi", server={"max_input_tokens": 8192, "max_total_tokens": 8192}
        ),
        "instances must be 1": settings(
            engine="endpoint", endpoint_url="http://127.0.0.1:1", instances=2
        ),
    }
    for message, config in bad.items():
        with pytest.raises(CliError, match=message):
            engines.check(job(config))
    # Found only in the job: fewer GPUs than instances x gpus_per_instance.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    config = settings(engine="tgi", instances=2, gpus_per_instance=2)
    assert cli.main(cli_args(path, config, job_paths(tmp_path, "gpus"))) == 2
    with pytest.raises(CliError, match=r"sees 2 GPU\(s\).* = 2 x 2 = 4"):
        engine(config).split_gpus("0,1")
    assert engine(settings(instances=2)).split_gpus(None) == [None, None]  # the dummy


def engine(config: dict) -> engines.Engine:
    return engines.engine_for(job(config).generation)


def test_pyxis_template():
    config = settings(
        engine="tgi",
        server={"launcher": "pyxis", "image": "ghcr.io#huggingface/tgi:3.3.7", "mounts": ["/a:/b"]},
    )
    command = engine(config).command_template()
    assert command[: command.index("text-generation-launcher")] == [
        "srun", "--overlap", "--nodes=1", "--ntasks=1", "--container-image={image}",
        "--container-mounts=/a:/b", "env", "CUDA_VISIBLE_DEVICES={gpus}",
    ]  # fmt: skip
    assert engine(config).image_record() == {
        "name": "ghcr.io#huggingface/tgi:3.3.7",
        "digest": None,
    }
    pinned = settings(engine="tgi", server={"launcher": "pyxis", "image": f"tgi@sha256:{'a' * 64}"})
    assert engine(pinned).image_record()["digest"] == f"sha256:{'a' * 64}"


def test_redaction(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setenv("MY_API_KEY", "sk-another-secret")
    args = [
        "serve",
        "--api-key",
        "plain-key",
        "--hf-token=abc",
        "https://user:pw@host/x",
        "--note=hf_secret_value_123",
        "sk-another-secret",
    ]
    assert redact.args(args) == [
        "serve",
        "--api-key",
        "***",
        "--hf-token=***",
        "https://***@host/x",
        "--note=***",
        "***",
    ]
    assert redact.env({"A_TOKEN": "x", "HF_HOME": "/data"}) == {
        "A_TOKEN": "***",
        "HF_HOME": "/data",
    }
    assert re.fullmatch(r"python", recorded([sys.executable])[0])


def test_every_engine_of_the_schema_has_a_class():
    enum = step_settings.subschema(("generation",))["properties"]["engine"]["enum"]
    assert sorted(engines.ENGINES) == sorted(enum)
    assert all(cls.kind == kind for kind, cls in engines.ENGINES.items())


def test_gpus_a_job_needs():
    assert engines.gpus(job(settings(engine="tgi", instances=2, gpus_per_instance=4))) == 8
    assert engines.gpus(job(settings(engine="vllm"))) == 1
    assert engines.gpus(job(settings(instances=2))) == 0  # the dummy
    endpoint = settings(engine="endpoint", endpoint_url="http://127.0.0.1:1")
    assert engines.gpus(job(endpoint)) == 0


def test_a_bad_engine_config_fails_planning(tmp_path):
    """The engine's checks run at planning: `snakemake -n` fails before any job."""
    workdir = make_workdir(tmp_path / "w")
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["generation"] |= {"engine": "vllm", "server": {"launcher": "apptainer"}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(CliError, match="needs server.image"):
        plan.generate_job(step_settings.validate_config(config))
    proc = run_snakemake(workdir, "-n", check=False, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "config: generation.server.launcher apptainer needs server.image" in output
    assert not (workdir / "results").exists()
