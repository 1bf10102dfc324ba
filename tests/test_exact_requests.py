"""Exact generation requests: what config/cosmopedia.yaml sends on the wire (Mixtral's
chat template rendered on the client, TGI's text-generation route, every sampling
parameter and the row's seed), and settings the chosen engine or route would ignore,
refused before any job (`engines.check`: planning, `snakemake -n`, the CLI, the job).

The wire is read where it arrives: the dummy server behind TGI's command line
(`tests/mimic.py tgi`) appends every request body it receives to a file
(`--dummy-record-requests`)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import BIN, REPO, make_workdir, run_snakemake
from cosmopedia import cli, plan, redact, yamlfile
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.generation import engines, probes
from cosmopedia.generation.chat_template import load_chat_template
from cosmopedia.generation.sidecar import Sidecar
from cosmopedia.seeding import derive_seed
from test_engines import MIMIC
from test_generate import job, job_paths, run_cli, settings, write_prompts

TEMPLATES = REPO / "resources" / "chat_templates"
MIXTRAL = TEMPLATES / "mixtral-8x7b-instruct-v0.1.jinja"
MIXTRAL_SHA256 = "26a59556925c987317ce5291811ba3b7f32ec4c647c400c6cc7e3a9993007ba7"
COSMOPEDIA_YAML = REPO / "config" / "cosmopedia.yaml"
# Cosmopedia's sampling (generation/llm_swarm_script.py), as TGI's GenerateParameters.
COSMOPEDIA_PARAMETERS = {
    "details": True,
    "do_sample": True,
    "max_new_tokens": 2500,
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 50,
    "repetition_penalty": 1.2,
}


def cosmopedia_config() -> dict:
    """config/cosmopedia.yaml as the workflow sees it (validated, defaults filled in)."""
    return step_settings.validate_config(yamlfile.read(str(COSMOPEDIA_YAML)))


def recorded(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- the template, shipped as data -------------------------------------------------------


def test_shipped_chat_templates_match_their_provenance_note():
    note = (TEMPLATES / "README.md").read_text(encoding="utf-8")
    files = sorted(TEMPLATES.glob("*.jinja"))
    assert MIXTRAL in files
    for path in files:
        data = path.read_bytes()
        assert f"## `{path.name}`" in note, path.name
        assert f"{len(data)}, `{hashlib.sha256(data).hexdigest()}`" in note, path.name
    assert hashlib.sha256(MIXTRAL.read_bytes()).hexdigest() == MIXTRAL_SHA256


def test_mixtral_template_renders_what_cosmopedia_sent():
    """transformers' apply_chat_template(tokenize=False) with Mixtral's "<s>": exactly
    "<s>[INST] " + prompt + " [/INST]" (no space after <s>, nothing after [/INST])."""
    prompt = 'Here is an extract: "A quiet river".\n\nWrite a blog post.  '
    original = load_chat_template(str(MIXTRAL), "m", "r", bos_token="<s>", eos_token="</s>")
    assert original.render(prompt) == "<s>[INST] " + prompt + " [/INST]"
    assert original.record() == {
        "mode": "file",
        "sha256": MIXTRAL_SHA256,
        "source": MIXTRAL.name,
        "bos": "<s>",
        "eos": "</s>",
    }
    # The default leaves the BOS to the engine's tokenizer: one BOS instead of two.
    assert load_chat_template(str(MIXTRAL), "m", "r").render(prompt) == (
        "[INST] " + prompt + " [/INST]"
    )


# --- config/cosmopedia.yaml on the wire --------------------------------------------------


def test_a_cosmopedia_request_on_the_wire(tmp_path, monkeypatch):
    """config/cosmopedia.yaml's generation section, unchanged but for the program TGI's
    launcher is played by: every request TGI would receive, byte for byte."""
    monkeypatch.chdir(REPO)  # the config's template path is relative, as in a run
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # gpus_per_instance: 2
    record = tmp_path / "requests.jsonl"
    config = cosmopedia_config()
    generation = config["generation"]
    assert generation["engine"] == "tgi"
    assert generation["chat_template"] == str(MIXTRAL.relative_to(REPO))
    generation["server"] |= {
        "program": [*MIMIC, "tgi"],
        "extra_args": ["--dummy-record-requests", str(record)],
    }
    job_settings = plan.generate_job(config)  # the planner's checks, as `snakemake -n`
    prompts = tmp_path / "prompts.parquet"
    df = write_prompts(prompts, n=6)
    paths = job_paths(tmp_path, "wire")
    argv = ["generate", "--prompts", str(prompts)]
    argv += ["--settings", step_settings.canonical_json(job_settings)]
    for key, path in paths.items():
        argv += [f"--{key.replace('_', '-')}", str(path)]
    assert cli.main(argv) == 0

    requests = recorded(record)
    # One smoke request at start-up, then one request per row on huggingface_hub's
    # text_generation route: POST / (TGI's compat route, as Cosmopedia's client).
    assert [r["path"] for r in requests].count("/generate") == 1
    sent = {r["body"]["inputs"]: r for r in requests if r["path"] != "/generate"}
    assert len(sent) == df.height and {r["path"] for r in sent.values()} == {"/"}
    for row_id, prompt in zip(df["id"], df["prompt"], strict=True):
        inputs = "<s>[INST] " + prompt + " [/INST]"
        seed = derive_seed("cosmopedia/v0.1", row_id)
        assert sent[inputs]["body"] == {
            "inputs": inputs,
            "parameters": {**COSMOPEDIA_PARAMETERS, "seed": seed},
        }

    prov = json.loads(paths["provenance"].read_text())
    assert prov["model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert prov["revision"] == "125c431e2ff41a156b9f9076f744d2f35dd6e67a"
    engine = prov["engine"]
    assert (engine["kind"], engine["api"], engine["route"]) == ("tgi", "tgi", "/generate")
    assert engine["request"] == {"path": "/", "parameters": COSMOPEDIA_PARAMETERS}
    assert engine["chat_template"]["sha256"] == MIXTRAL_SHA256
    assert engine["chat_template"]["bos"] == "<s>"
    assert "ignored_sampling" not in engine


def test_a_null_sampling_parameter_is_not_sent(tmp_path, monkeypatch):
    """TGI's chat route reads no top_k and no repetition_penalty: null, they are not sent."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    record = tmp_path / "requests.jsonl"
    prompts = tmp_path / "prompts.parquet"
    write_prompts(prompts, n=3)
    config = settings(
        engine="tgi",
        chat_template="server",
        sampling={"top_k": None, "repetition_penalty": None},
        server={"program": [*MIMIC, "tgi"], "extra_args": ["--dummy-record-requests", str(record)]},
    )
    code, paths = run_cli(tmp_path, "chat", prompts, config)
    assert code == 0
    bodies = [r["body"] for r in recorded(record) if r["path"] == "/v1/chat/completions"]
    assert len(bodies) == 3
    for body in bodies:
        assert {"max_tokens": 2500, "temperature": 0.6, "top_p": 0.95}.items() <= body.items()
        assert "top_k" not in body and "repetition_penalty" not in body
    engine = json.loads(paths["provenance"].read_text())["engine"]
    assert engine["request"] == {
        "path": "/v1/chat/completions",
        "parameters": {"max_tokens": 2500, "temperature": 0.6, "top_p": 0.95},
    }


def test_the_manifest_keeps_the_template_tokens():
    """The manifest's config (what `verify` rebuilds from) masks keys named like secrets
    (*_token): the template tokens must come through unmasked."""
    resolved = redact.config(cosmopedia_config())
    assert resolved["generation"]["chat_template_tokens"] == {"bos": "<s>", "eos": "</s>"}
    assert plan.generate_job(resolved).generation.chat_template_tokens.bos == "<s>"


def test_the_template_file_feeds_the_generate_param(tmp_path, monkeypatch):
    """The client renders the file: a change of its content reruns every generate job."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.jinja").write_text(MIXTRAL.read_text())
    config = cosmopedia_config()
    config["generation"]["chat_template"] = "t.jinja"
    before = plan.generate_request(config)
    assert before["chat_template_sha256"] == MIXTRAL_SHA256
    (tmp_path / "t.jinja").write_text(MIXTRAL.read_text().replace("[INST] ", "[INST]"))
    assert plan.generate_request(config)["chat_template_sha256"] != MIXTRAL_SHA256


# --- refused: settings the engine or its route would ignore ------------------------------

ENDPOINT = {"engine": "endpoint", "endpoint_url": "http://127.0.0.1:1"}
NO_PENALTIES = {"sampling": {"top_k": None, "repetition_penalty": None}}

REFUSED = [
    # TGI's ChatRequest has neither; its CompletionRequest has no top_k.
    ("tgi-chat", {"engine": "tgi", "chat_template": "server"}, "generation.sampling.top_k"),
    (
        "tgi-chat-penalty",
        {"engine": "tgi", "chat_template": "server", "sampling": {"top_k": None}},
        "generation.sampling.repetition_penalty",
    ),
    (
        "tgi-endpoint-chat",
        {**ENDPOINT, "chat_template": "server"},
        "generation.sampling.top_k: engine endpoint's /v1/chat/completions would drop it",
    ),
    ("tgi-completions", {"engine": "tgi", "api": "openai"}, "generation.sampling.top_k"),
    ("vllm-generate", {"engine": "vllm", "api": "tgi"}, "generation.api: engine vllm does not"),
    # The dummy's simulation, with a real engine.
    ("dummy-latency", {"engine": "tgi", "dummy": {"latency_per_token_s": 0.01}}, "dummy.latency"),
    ("dummy-faults", {**ENDPOINT, "dummy": {"faults": {"rate_429": 0.1}}}, "dummy.faults.rate_429"),
    # A URL, with a server the job starts.
    ("url-served", {"engine": "sglang", "endpoint_url": "http://x"}, "generation.endpoint_url"),
    ("url-dummy", {"endpoint_url": "http://x"}, "generation.endpoint_url"),
    # Launch settings, with a server the job does not start.
    ("endpoint-launcher", {**ENDPOINT, "server": {"launcher": "native", "extra_args": ["-x"]}},
     "generation.server.extra_args"),
    ("endpoint-env", {**ENDPOINT, "server": {"env": {"HF_HOME": "/data"}}}, "server.env"),
    ("endpoint-limits", {**ENDPOINT, "server": {"max_total_tokens": 4096}}, "max_total_tokens"),
    ("endpoint-gpus", {**ENDPOINT, "gpus_per_instance": 2}, "generation.gpus_per_instance"),
    # The dummy runs its own command.
    ("dummy-extra-args", {"server": {"extra_args": ["--x"]}}, "generation.server.extra_args"),
    ("dummy-program", {"server": {"program": ["x"]}}, "generation.server.program"),
    ("dummy-launcher", {"server": {"launcher": "pyxis", "image": "x"}}, "server.launcher"),
    ("dummy-limits", {"server": {"max_input_tokens": 100}}, "server.max_input_tokens"),
    ("dummy-capacity", {"server": {"max_concurrent_requests": 4}}, "max_concurrent_requests"),
    # What the command or the launcher leaves out.
    ("vllm-input-tokens", {"engine": "vllm", "server": {"max_input_tokens": 100}},
     "generation.server.max_input_tokens: engine vllm would ignore it (the vllm command"),
    ("native-image", {"engine": "tgi", "server": {"image": "tgi.sif"}}, "server.image"),
    ("native-mounts", {"engine": "tgi", "server": {"mounts": ["/a:/b"]}}, "server.mounts"),
    ("native-digest", {"engine": "tgi", "server": {"image_digest": None}}, "image_digest"),
    # Template tokens without a template the client renders.
    ("tokens-raw", {"chat_template_tokens": {"bos": "<s>"}}, "chat_template_tokens"),
    ("tokens-server", {"engine": "sglang", "chat_template": "server",
                       "chat_template_tokens": {"eos": "</s>"}}, "chat_template_tokens"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_setting_the_engine_or_route_would_ignore_is_refused(case, changes, message):
    with pytest.raises(CliError, match=re.escape(message)):
        engines.check(job(settings(**changes)))


ACCEPTED = [
    ("tgi-chat-without-penalties", {"engine": "tgi", "chat_template": "server", **NO_PENALTIES}),
    ("tgi-endpoint-chat", {**ENDPOINT, "chat_template": "server", **NO_PENALTIES}),
    ("sglang-chat", {"engine": "sglang", "chat_template": "server"}),
    ("vllm-completions", {"engine": "vllm"}),
    ("openai-endpoint-chat", {**ENDPOINT, "api": "openai", "chat_template": "server"}),
    ("endpoint-capacity", {**ENDPOINT, "server": {"max_concurrent_requests": 8}}),
    ("dummy-simulation", {"dummy": {"latency_per_token_s": 0.01}, "server": {"env": {"A": "1"}}}),
    ("dummy-chat", {"chat_template": "server"}),
    ("dummy-openai", {"api": "openai"}),
    ("tgi-pyxis", {"engine": "tgi",
                   "server": {"launcher": "pyxis", "image": "i", "mounts": ["/a:/b"]}}),
    ("vllm-total-tokens", {"engine": "vllm", "server": {"max_total_tokens": 4096}}),
    ("tokens-with-file", {"chat_template": str(MIXTRAL),
                          "chat_template_tokens": {"bos": "<s>"}}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_settings_the_engine_and_route_use_pass(case, changes):
    engines.check(job(settings(**changes)))


def test_every_refusal_is_listed_by_key():
    problems = engines.ignored_settings(
        engines.engine_for(
            job(
                settings(
                    engine="tgi",
                    chat_template="server",
                    endpoint_url="http://x",
                    dummy={"max_batch": 2},
                )
            ).generation
        )
    )
    keys = [p.split(":")[0] for p in problems]
    assert keys == [
        "generation.endpoint_url",
        "generation.dummy.max_batch",
        "generation.sampling.top_k",
        "generation.sampling.repetition_penalty",
    ]


def test_an_unreadable_template_file_is_refused_before_any_job(tmp_path):
    with pytest.raises(CliError, match=r"generation\.chat_template .*missing\.jinja"):
        engines.check(job(settings(chat_template=str(tmp_path / "missing.jinja"))))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    with pytest.raises(CliError, match="does not render"):
        engines.check(job(settings(chat_template=str(broken))))


# --- refused through the workflow and the CLI --------------------------------------------


def bad_cosmopedia_yaml() -> str:
    """config/cosmopedia.yaml with the chat route of its previous version."""
    text = COSMOPEDIA_YAML.read_text(encoding="utf-8")
    template = "  chat_template: resources/chat_templates/mixtral-8x7b-instruct-v0.1.jinja\n"
    tokens = '  chat_template_tokens: {bos: "<s>", eos: "</s>"}\n'
    assert template in text and tokens in text
    return text.replace(template, "  chat_template: server\n").replace(tokens, "")


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["cosmopedia-chat-route", "dummy-extra-args"])
def test_an_ignored_setting_fails_the_dry_run_naming_the_key(tmp_path, case):
    workdir = make_workdir(tmp_path / "w")
    if case == "cosmopedia-chat-route":
        text = bad_cosmopedia_yaml()
        message = (
            "generation.sampling.top_k: engine tgi's /v1/chat/completions would drop it "
            "(TGI's ChatRequest has neither top_k nor repetition_penalty)"
        )
    else:
        config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
        config["generation"]["server"] = {"extra_args": ["--max-batch", "4"]}
        text = yaml.safe_dump(config, sort_keys=False)
        message = "generation.server.extra_args: engine dummy would ignore it"
    (workdir / "bad.yaml").write_text(text, encoding="utf-8")
    proc = run_snakemake(workdir, "-n", "--configfile", str(workdir / "bad.yaml"), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"config: {message}" in output
    assert "Job stats" not in output  # nothing was planned, let alone run
    assert not (workdir / "results").exists()


def test_an_ignored_setting_fails_check_config_and_the_generate_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(bad_cosmopedia_yaml(), encoding="utf-8")
    proc = subprocess.run(
        [str(BIN / "cosmopedia"), "check-config", str(bad)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "generation.sampling.top_k: engine tgi's /v1/chat/completions" in proc.stderr

    # The job checks again (a command run by hand): no server is started.
    prompts = tmp_path / "prompts.parquet"
    write_prompts(prompts, n=2)
    config = settings(engine="tgi", chat_template="server", server={"program": [*MIMIC, "tgi"]})
    code, paths = run_cli(tmp_path, "refused", prompts, config)
    assert code == 2
    assert not paths["engine_log"].exists() and not paths["output"].exists()


def test_the_dummy_records_the_requests_it_receives(tmp_path):
    """`serve-dummy --record-requests` (and the mimics' --dummy-record-requests)."""
    record = tmp_path / "requests.jsonl"
    command = [sys.executable, "-m", "cosmopedia.cli", "serve-dummy", "--host", "{host}"]
    command += ["--port", "{port}", "--record-requests", str(record)]
    smoke = probes.smoke_request("tgi", "cosmopedia/dummy")
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30, smoke=smoke):
        pass
    (request,) = recorded(record)
    assert request == {
        "path": "/generate",
        # The smoke request's first attempt (seed 1; a retry asks with another seed).
        "body": {"inputs": "Hello", "parameters": {"max_new_tokens": 2, "seed": 1}},
    }
