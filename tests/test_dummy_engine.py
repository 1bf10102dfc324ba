"""The dummy engine: its text generation (pure function) and its TGI-protocol HTTP server."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from cosmopedia.generation.dummy.faults import Faults
from cosmopedia.generation.dummy.text import (
    CHAT_TEMPLATE,
    apply_chat_template,
    count_tokens,
    extract_content,
    generate_text,
)
from cosmopedia.generation.sidecar import Sidecar

# The clean step's opener pattern.
OPENER_RE = re.compile(r"^(Hello|Hi|Welcome|Greetings)\b[^.!?\n]*[.!?]\s*")

BENCHMARK_SENTENCE = "Which gas do plants absorb from the air during photosynthesis?"
EXTRACT = (
    "Photosynthesis is the process by which green plants turn light energy into chemical "
    "energy. It takes place mainly in the leaves, inside small structures called "
    "chloroplasts. The chlorophyll pigment absorbs red and blue light while reflecting green "
    "light. Carbon dioxide enters the leaf through tiny pores named stomata. Water is drawn up "
    "from the roots through the xylem vessels. The reaction produces glucose and releases "
    f"oxygen as a by-product. {BENCHMARK_SENTENCE} Farmers use greenhouses to extend the "
    "growing season. Some plants, like cacti, open their stomata only at night. Scientists "
    "still study how to make artificial leaves that copy this chemistry."
)
# The same extract with a few words changed (a near-duplicate seed).
EXTRACT_EDITED = EXTRACT.replace("tiny pores", "very small pores").replace("at night", "after dark")
UNRELATED = (
    "The Roman Empire built an extensive network of roads across Europe. Legions marched "
    "along paved routes that connected distant provinces to the capital. Merchants carried "
    "olive oil, wine and pottery between busy port cities. Milestones recorded the distance "
    "to Rome in carefully carved numerals. Many modern highways still follow the original "
    "Roman alignments today."
)


def make_prompt(extract: str) -> str:
    return (
        f'Here is an extract from a webpage: "{extract}".\n\n'
        "Write a long and detailed course unit related to the extract above."
    )


def five_grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


def jaccard(a: str, b: str) -> float:
    x, y = five_grams(a), five_grams(b)
    return len(x & y) / len(x | y)


def long_seeds(prompt: str, count: int) -> list[int]:
    """Seeds whose draw is not "short" (short texts, at most 120 tokens, are cut inside the
    first retelling; a full retelling of these test extracts is longer than 150 tokens)."""
    return [s for s in range(200) if generate_text(prompt, s, 10_000)[1] > 150][:count]


def test_same_prompt_and_seed_give_the_same_text():
    prompt = make_prompt(EXTRACT)
    assert generate_text(prompt, 7, 2500) == generate_text(prompt, 7, 2500)
    # Greedy (no seed) behaves as seed 0.
    assert generate_text(prompt, None, 2500) == generate_text(prompt, 0, 2500)


def test_near_identical_prompts_give_near_identical_texts():
    a, b = make_prompt(EXTRACT), make_prompt(EXTRACT_EDITED)
    seeds = long_seeds(a, 6)
    assert len(seeds) == 6
    assert jaccard(generate_text(a, seeds[0], 2500)[0], generate_text(b, seeds[0], 2500)[0]) > 0.8
    # Different seeds change length and opener, not the retold content.
    for s, t in zip(seeds[:3], seeds[3:], strict=True):
        assert jaccard(generate_text(a, s, 2500)[0], generate_text(b, t, 2500)[0]) > 0.8


def test_unrelated_prompts_share_almost_nothing():
    for seed in range(5):
        text_a = generate_text(make_prompt(EXTRACT), seed, 2500)[0]
        text_b = generate_text(make_prompt(UNRELATED), seed, 2500)[0]
        assert jaccard(text_a, text_b) < 0.2


def test_quoted_sentences_survive_verbatim():
    prompt = make_prompt(EXTRACT)
    assert extract_content(prompt) == EXTRACT
    for seed in long_seeds(prompt, 3):
        assert BENCHMARK_SENTENCE in generate_text(prompt, seed, 2500)[0]
    # The instructions after the quoted material are not retold.
    assert "course unit" not in generate_text(prompt, 3, 2500)[0]


def test_max_new_tokens_cuts_exactly():
    text, n_tokens, finish_reason = generate_text(make_prompt(EXTRACT), 5, 30)
    assert (n_tokens, finish_reason) == (30, "length")
    assert count_tokens(text) == 30
    text, n_tokens, finish_reason = generate_text(make_prompt(EXTRACT), 5, 10_000)
    assert finish_reason == "eos_token" and count_tokens(text) == n_tokens < 10_000


def test_length_spread_short_draws_and_openers():
    prompt = make_prompt(EXTRACT)
    outputs = [generate_text(prompt, seed, 2500) for seed in range(400)]
    lengths = sorted(n for _, n, _ in outputs)
    short = sum(n < 150 for n in lengths)
    assert 0.03 * 400 <= short <= 0.15 * 400
    assert lengths[-1] > 2 * lengths[200]  # long tail
    openers = [text for text, _, _ in outputs if OPENER_RE.match(text)]
    assert 0.08 * 400 <= len(openers) <= 0.25 * 400
    for text in openers:
        # The whole greeting is one sentence: stripping it leaves the retold content.
        assert OPENER_RE.sub("", text, count=1).startswith("Photosynthesis is the process")


def test_prompt_without_quotes_is_retold_whole():
    prompt = "Explain how tides are caused by the gravity of the Moon and the Sun."
    assert prompt in generate_text(prompt, 1, 2500)[0]


# --- HTTP server --------------------------------------------------------------------------


def dummy_command(*options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cosmopedia.cli",
        "serve-dummy",
        "--host",
        "{host}",
        "--port",
        "{port}",
        *options,
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("dummy") / "engine.log"
    with Sidecar(dummy_command(), log_path, startup_timeout_s=30) as sidecar:
        yield sidecar


def post(url: str, body, timeout: float = 30.0):
    """(status, JSON body, headers) of a POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_health_and_info(server):
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
        assert response.status == 200
    info = server.info
    assert info["engine"] == "dummy" and info["model_id"] == "cosmopedia/dummy"
    assert info["model_sha"] is None
    for key in ("max_concurrent_requests", "max_input_tokens", "max_total_tokens", "version"):
        assert key in info


def test_generate_matches_the_pure_function(server):
    prompt = make_prompt(EXTRACT)
    parameters = {"max_new_tokens": 200, "seed": 42, "details": True, "do_sample": True}
    status, body, headers = post(
        f"{server.url}/generate", {"inputs": prompt, "parameters": parameters}
    )
    text, n_tokens, finish_reason = generate_text(prompt, 42, 200)
    assert status == 200
    assert body["generated_text"] == text
    assert body["details"]["finish_reason"] == finish_reason
    assert body["details"]["generated_tokens"] == n_tokens
    assert body["details"]["seed"] == 42
    assert headers["x-generated-tokens"] == str(n_tokens)
    assert headers["x-prompt-tokens"] == str(count_tokens(prompt))

    # Without details=true the reply is the text alone, as TGI's.
    status, body, _ = post(f"{server.url}/generate", {"inputs": prompt, "parameters": {}})
    assert status == 200 and set(body) == {"generated_text"}


def test_compat_route_returns_a_list(server):
    status, body, _ = post(
        f"{server.url}/", {"inputs": "Tell me about tides.", "parameters": {"details": True}}
    )
    assert status == 200 and isinstance(body, list) and len(body) == 1
    assert body[0]["details"]["seed"] is None  # greedy


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": ""},
        {"inputs": "   "},
        {"parameters": {}},
        {"inputs": 3},
        {"inputs": "hi", "parameters": {"max_new_tokens": 0}},
        {"inputs": "hi", "parameters": {"max_new_tokens": "5"}},
        {"inputs": "hi", "parameters": {"seed": -1}},
        {"inputs": "hi", "parameters": {"seed": 1.5}},
        {"inputs": "hi", "parameters": {"temperature": 0}},
        {"inputs": "hi", "parameters": {"top_k": True}},
        {"inputs": "hi", "parameters": "fast"},
        b"not json",
    ],
)
def test_bad_requests_get_422_with_tgi_error_json(server, body):
    status, reply, _ = post(f"{server.url}/generate", body)
    assert status == 422
    assert reply["error_type"] == "validation"
    assert reply["error"].startswith("Input validation error")


def test_overload_gets_429(tmp_path):
    # 100 tokens at 5 ms each hold a request for about half a second.
    command = dummy_command("--max-concurrent", "2", "--latency-per-token", "0.005")
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30, smoke=None) as sidecar:
        body = {"inputs": "Tides rise and fall twice a day.", "parameters": {"max_new_tokens": 100}}
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: post(f"{sidecar.url}/generate", body), range(6)))
        statuses = sorted(status for status, _, _ in replies)
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1
        assert set(statuses) == {200, 429}
        for status, reply, _ in replies:
            if status == 429:
                assert reply["error_type"] == "overloaded"
        # Capacity comes back once requests finish.
        assert post(f"{sidecar.url}/generate", body)[0] == 200
        with urllib.request.urlopen(f"{sidecar.url}/stats", timeout=5) as response:
            stats = json.loads(response.read())
        assert stats["requests"] == 7 and stats["overloaded"] == statuses.count(429)


# --- OpenAI-compatible routes, queueing, faults --------------------------------------------


def test_openai_completions_and_models(server):
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=5) as response:
        models = json.loads(response.read())
    assert [m["id"] for m in models["data"]] == ["cosmopedia/dummy"]
    prompt = make_prompt(EXTRACT)
    body = {"model": "cosmopedia/dummy", "prompt": prompt, "max_tokens": 60, "seed": 9}
    body |= {"temperature": 0.6, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.2}
    status, reply, _ = post(f"{server.url}/v1/completions", body)
    text, n_tokens, _ = generate_text(prompt, 9, 60)
    assert status == 200 and reply["object"] == "text_completion"
    choice = reply["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (text, "length")
    assert reply["usage"]["completion_tokens"] == n_tokens == 60

    status, reply, _ = post(f"{server.url}/v1/completions", {**body, "max_tokens": 5000})
    assert status == 200 and reply["choices"][0]["finish_reason"] == "stop"  # an EOS


def test_openai_chat_applies_the_template(server):
    messages = [{"role": "user", "content": make_prompt(EXTRACT)}]
    body = {"model": "cosmopedia/dummy", "messages": messages, "max_tokens": 2500, "seed": 4}
    status, reply, _ = post(f"{server.url}/v1/chat/completions", body)
    text, n_tokens, _ = generate_text(apply_chat_template(messages), 4, 2500)
    assert status == 200 and reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": text}
    assert reply["usage"]["completion_tokens"] == n_tokens


def test_the_chat_template_renders_the_same_with_jinja():
    import jinja2

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_TEMPLATE)
    rendered = template.render(messages=messages, add_generation_prompt=True)
    assert rendered == apply_chat_template(messages)


@pytest.mark.parametrize(
    ("route", "body", "status"),
    [
        ("/v1/completions", {"model": "other/model", "prompt": "hi"}, 404),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400),
        ("/v1/completions", {"prompt": ""}, 400),
        ("/v1/completions", {"prompt": "hi", "stream": True}, 400),
        ("/v1/chat/completions", {"messages": []}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400),
    ],
)
def test_openai_errors(server, route, body, status):
    got, reply, _ = post(f"{server.url}{route}", body)
    assert got == status and reply["error"]["code"] == status and reply["error"]["message"]


def test_admitted_requests_queue_for_the_batch(tmp_path):
    # 3 admitted, 1 generating at a time: nobody gets a 429, they take turns.
    command = dummy_command("--max-concurrent", "3", "--max-batch", "1")
    command += ["--latency-per-token", "0.004"]
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30, smoke=None) as sidecar:
        body = {"inputs": "Tides rise and fall twice a day.", "parameters": {"max_new_tokens": 50}}
        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda _: post(f"{sidecar.url}/generate", body), range(3)))
        period = time.monotonic() - started
        with urllib.request.urlopen(f"{sidecar.url}/stats", timeout=5) as response:
            stats = json.loads(response.read())
    assert [status for status, _, _ in replies] == [200, 200, 200]
    assert stats["peak_in_flight"] == 3 and stats["batch_capacity"] == 1
    # One sequence at a time for about 0.2 s each: they took turns (bench/saturation_meter.py
    # measures how busy the batch was, tests/test_bench_saturation.py checks it).
    assert 0.55 < period < 2.0


def test_faults_are_a_pure_function_of_seed_request_and_repetition():
    faults = Faults(seed=5, rate_429=0.2, rate_503=0.1, rate_reset=0.1, rate_hang=0.1)
    draws = [faults.draw(f"request-{i}", n) for i in range(2000) for n in range(2)]
    assert draws == [faults.draw(f"request-{i}", n) for i in range(2000) for n in range(2)]
    shares = {kind: draws.count(kind) / len(draws) for kind in set(draws)}
    expected = {"overloaded": 0.2, "unavailable": 0.1, "reset": 0.1, "hang": 0.1, None: 0.5}
    assert shares == pytest.approx(expected, abs=0.03)
    other = Faults(seed=6, rate_429=0.2, rate_503=0.1, rate_reset=0.1, rate_hang=0.1)
    assert draws != [other.draw(f"request-{i}", n) for i in range(2000) for n in range(2)]
    with pytest.raises(ValueError):
        Faults(rate_429=0.7, rate_503=0.5)
