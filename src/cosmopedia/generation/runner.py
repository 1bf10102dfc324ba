"""Prompts shard -> generations shard (`cosmopedia generate`): the generate step's run.

1. The engine of `generation.engine` (engines/) checks the settings.
2. Each row gets its request (requests.py): the prompt through the chat template
   (chat_template.py), a seed derived from (dataset version, row id), a key.
3. Rows whose key is in the checkpoint (checkpoint.py) are reused, not sent again.
4. The engine starts its servers (or finds the running one); one bounded-concurrency
   stream (stream.py) sends the other rows through the engine's client route (routes.py),
   retrying by error class, writing every finished row to the checkpoint.
5. The output is written atomically with the provenance (provenance.py); the checkpoint
   is deleted.

A SIGTERM (Slurm's time limit, scancel) stops the servers and keeps every finished row in
the checkpoint; the retried job resumes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import polars as pl

from cosmopedia import io, settings
from cosmopedia.errors import CliError
from cosmopedia.generation import engines, routes
from cosmopedia.generation.chat_template import (
    SERVER,
    ChatTemplateError,
    load_chat_template,
)
from cosmopedia.generation.checkpoint import Checkpoint
from cosmopedia.generation.provenance import shard_provenance
from cosmopedia.generation.requests import RESULT_SCHEMA, Request, request_key
from cosmopedia.generation.sidecar import sigterm_raises
from cosmopedia.generation.stream import EngineDied, stream_shard
from cosmopedia.seeding import derive_seed

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("id", "source", "family", "prompt", "seed_data", "format", "audience")


def _read_prompts(path: str) -> pl.DataFrame:
    try:
        df = io.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise CliError(f"cannot read prompts {path}: {exc}") from exc
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise CliError(f"{path} lacks columns: {', '.join(missing)}")
    clash = [c for c in RESULT_SCHEMA if c in df.columns]
    if clash:
        raise CliError(f"{path} already has result columns: {', '.join(clash)}")
    if df["id"].null_count() or df["id"].n_unique() != df.height:
        raise CliError(f"{path}: ids must be unique and not null")
    return df


def run(
    prompts: str,
    output: str,
    provenance: str,
    checkpoint: str,
    engine_log: str,
    job: settings.Generate,
) -> dict:
    """Generate one shard; returns the provenance written to `provenance`."""
    g = job.generation
    engine = engines.engine_for(g)
    engine.check()
    try:
        template = load_chat_template(
            g.chat_template, g.model, g.revision, find=engine.find_chat_template
        )
    except ChatTemplateError as exc:
        raise CliError(str(exc)) from exc
    chat_server = template.mode == SERVER
    route = engine.route(chat_server).name
    context = None
    if template.mode is not None or route != routes.TgiGenerate.name:
        context = {"route": route, "chat_template": template.record()}
    if (server_settings := engine.key_settings()) is not None:
        context = {**(context or {}), "engine": server_settings}

    df = _read_prompts(prompts)
    requests = []
    for row_id, prompt in zip(df["id"].to_list(), df["prompt"].to_list(), strict=True):
        seed = derive_seed(job.dataset_version, row_id)
        key = request_key(prompt, seed, g.model, g.revision, g.sampling, context)
        requests.append(Request(row_id, template.render(prompt), seed, key))

    ckpt = Checkpoint(checkpoint, g.checkpoint_every)
    reused = ckpt.load({r.id: r.key for r in requests})
    pending = [r for r in requests if r.id not in reused]
    log.info("%d rows, %d reused from %s", len(requests), len(reused), checkpoint)

    routes.use_plain_http_client(g.concurrency, engine.external)
    with sigterm_raises(), contextlib.ExitStack() as stack:
        started_at = time.monotonic()
        started = engine.start(engine_log, stack)
        startup_s = time.monotonic() - started_at

        ckpt.open()
        stack.callback(ckpt.close)  # also on SIGTERM and on errors: keep finished rows
        started_at = time.monotonic()
        try:
            stream, concurrency = asyncio.run(
                stream_shard(
                    engine, started, ckpt, chat_server, pending, len(requests), len(reused)
                )
            )
        except EngineDied as exc:
            raise CliError(f"{exc}; finished rows are kept in {checkpoint}") from exc
        generation_s = time.monotonic() - started_at
        stream.log_progress()

    records = {**reused, **stream.results}
    results = [records[r.id] for r in requests]
    out = df.with_columns(
        [
            pl.Series(name, [rec[name] for rec in results], dtype=dtype)
            for name, dtype in RESULT_SCHEMA.items()
        ]
    )
    io.write_parquet(out, output)

    timings = {"startup_s": startup_s, "generation_s": generation_s}
    prov = shard_provenance(
        job, started, stream, route, template, results, len(reused), concurrency, timings
    )
    io.write_json(prov, provenance)
    ckpt.path.unlink(missing_ok=True)
    log.info(
        "done: %d rows (%d reused), %d failed %s, %d tokens, %d retries, startup %.1f s, "
        "generation %.1f s",
        prov["rows"],
        len(reused),
        prov["failed"],
        prov["failures_by_cause"],
        prov["generated_tokens"],
        prov["retries"],
        startup_s,
        generation_s,
    )
    return prov


def add_arguments(name: str, parser) -> None:
    parser.add_argument("--prompts", required=True, help="prompts shard (Parquet)")
    parser.add_argument("--output", required=True, help="generations shard (Parquet)")
    parser.add_argument("--provenance", required=True, help="shard provenance (JSON)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="append-only JSONL of finished rows, outside the declared outputs; "
        "deleted once the output is written",
    )
    parser.add_argument("--engine-log", required=True, help="engine server log (appended)")
    parser.add_argument("--settings", required=True, help="generation settings (JSON or @file)")


def main(args) -> int:
    # One line per HTTP request would drown the progress lines.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    job = settings.load(settings.Generate, args.settings)
    run(args.prompts, args.output, args.provenance, args.checkpoint, args.engine_log, job)
    return 0
