"""Engine saturation: how busy does each client keep an engine over a whole shard?

    .venv/bin/python bench/saturation.py [--rows 3000] [--capacity 16] [--latency 0.0004]
    .venv/bin/python bench/saturation.py --engine llamacpp [--rows 16] [--instances 2]

Runs the dummy engine as TGI works: a batch of C sequences generating at once, A >= C
requests admitted (--max-concurrent-requests; the others queue for the batch, 429 above
A), a time per generated token, Cosmopedia's output lengths (log-normal around 500 tokens,
a long tail cut at max_new_tokens=2500, 8% short texts). It sends the engine one shard
twice, each time to a fresh server:

* this client: `cosmopedia generate` (`generation.runner.run`, engine `endpoint`): one stream with
  min(concurrency, /info max_concurrent_requests) = A requests in flight, the next row
  sent as soon as one finishes;
* the seed's pattern (Cosmopedia's generation script over llm-swarm): the prompts in
  chunks of 1,000, `asyncio.gather` per chunk, a semaphore of A requests; each chunk
  waits for its slowest request before the next one starts.

Saturation = time-averaged sequences generating / C over the busy period (first sequence
to last answer), from the integral of bench/saturation_meter.py (the dummy engine with a
meter on its batch). Prints both and the ratio, plus the
steady state (until the batch was last full) and the drain after it. With `--admission`
equal to `--capacity` (no queue) every client turnaround leaves a slot idle, which on a
loaded machine costs a few percent.

`--engine llamacpp` measures against a real engine (`make llamacpp`): SmolLM2-135M on
llama.cpp servers (`--instances`, one CPU thread each, one request at a time). The same
shard goes, in alternating rounds, through

* the workflow's generate step (`runner.run`, engine `llamacpp`: it starts the servers,
  renders the GGUF's chat template, streams the rows): generated tokens / generation time
  from its provenance;
* the same servers (the engine's command, fresh ones) driven directly by a minimal client:
  one thread per server taking the next row, the same request bodies (prompts, seeds,
  sampling, token budget), tokens from the answers' usage over the wall time.

The rounds alternate which of the two goes first.

Both make the same texts (n_ubatch 1: exact), so the ratio of tokens/s is the share of the
servers' time the workflow's client keeps them generating (target >= 0.95). On a shared
machine a round's figures move with the other jobs' load, and with how the rows happen to
fall on the servers (the last ones finish alone): several rounds, alternating order.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
from huggingface_hub import AsyncInferenceClient

from cosmopedia import settings
from cosmopedia.generation import routes, runner
from cosmopedia.generation.sidecar import Sidecar
from cosmopedia.seeding import derive_seed

METER = Path(__file__).resolve().parent / "saturation_meter.py"

DATASET_VERSION = "bench/v0"
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
    "harbor",
    "forest",
    "market",
    "bridge",
    "castle",
    "desert",
    "island",
    "valley",
    "machine",
    "theory",
]
SAMPLING = {
    "max_new_tokens": 2500,
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 50,
    "repetition_penalty": 1.2,
}


def write_prompts(path: Path, rows: int) -> pl.DataFrame:
    records = []
    for i in range(rows):
        rng = random.Random(i)
        extract = " ".join(
            f"The {rng.choice(WORDS)} near the {rng.choice(WORDS)} is known for its "
            f"{rng.choice(WORDS)} and {rng.choice(WORDS)}."
            for _ in range(rng.randint(2, 6))
        )
        records.append(
            {
                "id": f"bench-{i:06d}",
                "source": "bench",
                "family": "web_samples",
                "prompt": f'Here is an extract: "{extract}".\n\nWrite a blog post.',
                "seed_data": extract,
                "format": "blogpost",
                "audience": "general",
            }
        )
    df = pl.DataFrame(records)
    df.write_parquet(path)
    return df


def stats(url: str) -> dict:
    """The engine's request counters (/stats) and its batch's integral (/saturation)."""
    out = {}
    for route in ("stats", "saturation"):
        with urllib.request.urlopen(f"{url}/{route}", timeout=10) as response:
            out |= json.loads(response.read())
    return out


def saturation(s: dict) -> tuple[float, float, float]:
    """(saturation, busy period in seconds, steady-state saturation) of one shard's server.

    The steady state ends when all slots were last busy; after it comes the drain, when
    the last (longest) requests finish and no row is left to send.
    """
    period = s["last_done_s"] - s["first_request_s"]
    steady_period = s["last_full_s"] - s["first_request_s"]
    steady = s["busy_at_last_full_s"] / (s["batch_capacity"] * steady_period)
    return s["busy_seq_s"] / (s["batch_capacity"] * period), period, steady


def dummy(capacity: int, admission: int, latency: float, log_path: Path) -> Sidecar:
    command = [sys.executable, str(METER), "--host", "{host}"]
    command += ["--port", "{port}", "--max-concurrent", str(admission)]
    command += ["--max-batch", str(capacity), "--latency-per-token", str(latency)]
    return Sidecar(command, log_path, startup_timeout_s=60, smoke=None)


def this_client(url: str, prompts: Path, work: Path, admission: int) -> None:
    generation = {
        "engine": "endpoint",
        "endpoint_url": url,
        "concurrency": 8 * admission,  # more than the engine admits: /info caps it
        "server": {"max_concurrent_requests": admission},
        "sampling": SAMPLING,
    }  # the other settings: the schema's defaults
    job = settings.Generate(
        DATASET_VERSION, settings.from_dict(settings.Generation, generation, "generation")
    )
    prov = runner.run(
        str(prompts),
        str(work / "ours.parquet"),
        str(work / "ours.provenance.json"),
        str(work / "ours.checkpoint.jsonl"),
        str(work / "ours.engine.log"),
        job,
    )
    # Texts cut at max_new_tokens count as failed in the report; requests must not fail.
    assert set(prov["failures_by_cause"]) <= {"length"}, prov["failures_by_cause"]
    assert prov["client"]["concurrency"] == admission, prov["client"]


async def seed_pattern(url: str, df: pl.DataFrame, admission: int, chunk: int) -> int:
    """Chunks of `chunk` prompts, a gather per chunk, at most `admission` in flight."""
    client = AsyncInferenceClient(base_url=url, api_key="EMPTY", timeout=900)
    semaphore = asyncio.Semaphore(admission)
    tokens = 0

    async def one(row_id: str, prompt: str) -> int:
        async with semaphore:
            output = await client.text_generation(
                prompt,
                details=True,
                do_sample=True,
                seed=derive_seed(DATASET_VERSION, row_id),
                **SAMPLING,
            )
            return output.details.generated_tokens

    rows = list(zip(df["id"].to_list(), df["prompt"].to_list(), strict=True))
    try:
        for start in range(0, len(rows), chunk):
            done = await asyncio.gather(*(one(i, p) for i, p in rows[start : start + chunk]))
            tokens += sum(done)
    finally:
        await client.close()
    return tokens


def llamacpp_generation(rows_tokens: int, instances: int) -> dict:
    """The generation settings of the llama.cpp mode (the other keys: the schema's)."""
    from cosmopedia.generation.engines import llamacpp

    model = llamacpp.model_path(None)
    return {
        "engine": "llamacpp",
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "revision": hashlib.sha256(model.read_bytes()).hexdigest(),
        "chat_template": "model",
        "instances": instances,
        "startup_timeout_s": 120,
        "server": {"max_total_tokens": 2048},
        "sampling": SAMPLING | {"max_new_tokens": rows_tokens},
    }


def through_the_workflow(prompts: Path, work: Path, generation: dict, name: str) -> tuple:
    """(generated tokens, seconds) of the generate step on the shard."""
    job = settings.Generate(
        DATASET_VERSION, settings.from_dict(settings.Generation, generation, "generation")
    )
    prov = runner.run(
        str(prompts),
        str(work / f"{name}.parquet"),
        str(work / f"{name}.provenance.json"),
        str(work / f"{name}.checkpoint.jsonl"),
        str(work / f"{name}.engine.log"),
        job,
    )
    assert prov["failed"] == prov["failures_by_cause"].get("length", 0), prov
    return prov["generated_tokens"], prov["timings"]["generation_s"]


def directly(df: pl.DataFrame, work: Path, generation: dict, name: str) -> tuple:
    """(generated tokens, seconds) of a minimal client on fresh servers of the same command:
    one thread per server, each taking the next row; the same request bodies."""
    import contextlib
    import threading

    from cosmopedia.generation import engines

    generation = settings.from_dict(settings.Generation, generation, "generation")
    engine = engines.engine_for(generation)
    template = engine.chat_template()
    route = routes.LlamacppCompletions(
        "", generation.model, generation.sampling, None, 900, http=None
    )
    bodies = [
        json.dumps(route.payload(template.render(p), derive_seed(DATASET_VERSION, i))).encode()
        for i, p in zip(df["id"].to_list(), df["prompt"].to_list(), strict=True)
    ]
    pending = iter(bodies)
    lock = threading.Lock()
    tokens = []

    def worker(url: str) -> None:
        while True:
            with lock:
                body = next(pending, None)
            if body is None:
                return
            request = urllib.request.Request(
                f"{url}/v1/completions", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=900) as response:
                tokens.append(json.loads(response.read())["usage"]["completion_tokens"])

    with contextlib.ExitStack() as stack:
        servers = engine.start(str(work / f"{name}.engine.log"), stack).servers
        threads = [threading.Thread(target=worker, args=(s.url,)) for s in servers]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    assert len(tokens) == len(bodies)
    return sum(tokens), elapsed


def llamacpp_main(args) -> int:
    """The workflow's tokens/s against the same llama.cpp servers driven directly."""
    generation = llamacpp_generation(args.max_new_tokens, args.instances)
    with tempfile.TemporaryDirectory(prefix="saturation-llamacpp-") as tmp:
        work = Path(tmp)
        prompts = work / "prompts.parquet"
        df = write_prompts(prompts, args.rows)
        print(
            f"shard: {args.rows} prompts; engine: {args.instances} llama.cpp server(s), "
            f"SmolLM2-135M, max_new_tokens {args.max_new_tokens}, {args.rounds} round(s)",
            flush=True,
        )
        totals = {"workflow": [0, 0.0], "direct": [0, 0.0]}
        started = time.monotonic()
        for round_ in range(args.rounds):
            # Alternating which goes first: a trend in the machine's load hits both alike.
            order = ["workflow", "direct"] if round_ % 2 == 0 else ["direct", "workflow"]
            measured = {}
            for name in order:
                if name == "workflow":
                    measured[name] = through_the_workflow(prompts, work, generation, f"w{round_}")
                else:
                    measured[name] = directly(df, work, generation, f"d{round_}")
            for name, (tokens, seconds) in measured.items():
                totals[name][0] += tokens
                totals[name][1] += seconds
                print(
                    f"round {round_ + 1} {name:<9} {tokens:>7} tokens {seconds:>7.1f} s "
                    f"{tokens / seconds:>7.1f} tokens/s",
                    flush=True,
                )
            # The same texts: n_ubatch 1 makes them independent of order and server.
            assert measured["workflow"][0] == measured["direct"][0], measured
        elapsed = time.monotonic() - started
    rates = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    ratio = rates["workflow"] / rates["direct"]
    print(f"workflow {rates['workflow']:.1f} tokens/s, direct {rates['direct']:.1f} tokens/s")
    print(f"ratio (workflow / direct client): {ratio:.3f}")
    print(f"bench wall time: {elapsed:.0f} s")
    if ratio < args.target:
        print(f"the workflow is below the {args.target} target", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["dummy", "llamacpp"], default="dummy")
    parser.add_argument("--rows", type=int, default=None, help="prompts (3000; llamacpp 16)")
    parser.add_argument("--capacity", type=int, default=16, help="batch: sequences (C)")
    parser.add_argument(
        "--admission", type=int, default=None, help="requests admitted (A), default 2 C"
    )
    parser.add_argument("--latency", type=float, default=0.0004, help="seconds per token")
    parser.add_argument("--chunk", type=int, default=1000, help="seed pattern's chunk size")
    parser.add_argument("--target", type=float, default=None, help="0.97; llamacpp 0.95")
    parser.add_argument("--instances", type=int, default=2, help="llamacpp: servers")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="llamacpp: per row")
    parser.add_argument("--rounds", type=int, default=4, help="llamacpp: rounds of both")
    args = parser.parse_args(argv)
    llama = args.engine == "llamacpp"
    args.rows = args.rows or (16 if llama else 3000)
    args.target = args.target if args.target is not None else (0.95 if llama else 0.97)
    if llama:
        logging.basicConfig(level=logging.WARNING)
        return llamacpp_main(args)
    admission = args.admission or 2 * args.capacity
    logging.basicConfig(level=logging.WARNING)
    # Also for the seed pattern's AsyncInferenceClient (HF_HUB_OFFLINE-proof, no proxy).
    routes.use_plain_http_client(8 * admission, trust_env=True)

    with tempfile.TemporaryDirectory(prefix="saturation-") as tmp:
        work = Path(tmp)
        prompts = work / "prompts.parquet"
        df = write_prompts(prompts, args.rows)
        print(
            f"shard: {args.rows} prompts; engine: batch of {args.capacity} sequences, "
            f"{admission} admitted, "
            f"{args.latency * 1000:g} ms/token, max_new_tokens {SAMPLING['max_new_tokens']}",
            flush=True,
        )
        results = {}
        started = time.monotonic()
        with dummy(args.capacity, admission, args.latency, work / "ours.log") as server:
            this_client(server.url, prompts, work, admission)
            results["this client"] = stats(server.url)
        with dummy(args.capacity, admission, args.latency, work / "seed.log") as server:
            asyncio.run(seed_pattern(server.url, df, admission, args.chunk))
            results[f"seed pattern (chunks of {args.chunk})"] = stats(server.url)
        elapsed = time.monotonic() - started

    print(
        f"{'client':<32} {'saturation':>10} {'steady':>7} {'drain':>6} {'busy period':>12} "
        f"{'requests':>9} {'429s':>5}"
    )
    sat = {}
    for name, s in results.items():
        sat[name], period, steady = saturation(s)
        drain = s["last_done_s"] - s["last_full_s"]
        print(
            f"{name:<32} {sat[name]:>10.4f} {steady:>7.4f} {drain:>5.1f}s {period:>11.1f}s "
            f"{s['requests']:>9} {s['overloaded']:>5}"
        )
    ours, seed = sat.values()
    print(f"ratio (this client / seed pattern): {ours / seed:.3f}")
    print(f"bench wall time: {elapsed:.0f} s")
    if ours < args.target:
        print(f"this client is below the {args.target} target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
