"""Prompts shard -> generations shard (`cosmopedia generate`): the generate step's run.

1. The engine of `generation.engine` (engines/) checks the settings.
2. Each row gets its request (requests.py): the prompt through the chat template
   (chat_template.py), a seed derived from (dataset version, row id), a key.
3. Rows whose key is in the checkpoint or in the previous output (checkpoint.py) are
   reused, not sent again; failed ones too, unless `generation.retry_failed` (then every
   row whose request failed is sent again) or the failure was transient and is in the
   checkpoint (a killed job's).
4. The engine starts its servers (or finds the running one); one bounded-concurrency
   stream (stream.py) sends the other rows through the engine's client route (routes.py),
   retrying by error class, writing every finished row to the checkpoint.
5. The output is written atomically with the provenance (provenance.py) and kept as the
   previous output; the checkpoint is deleted. A shard with failed rows gets a retry
   state file (planning reads it to rerun the shard with `generation.retry_failed`).

A SIGTERM (Slurm's time limit, scancel) stops the servers and keeps every finished row in
the checkpoint; the retried job resumes from it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from pathlib import Path

import polars as pl

from cosmopedia import io, redact, settings
from cosmopedia.errors import CliError
from cosmopedia.generation import engines, routes
from cosmopedia.generation.chat_template import SERVER, ChatTemplateError
from cosmopedia.generation.checkpoint import Checkpoint, PreviousOutput
from cosmopedia.generation.provenance import shard_provenance
from cosmopedia.generation.requests import (
    RESULT_SCHEMA,
    Request,
    failure_cause,
    key_of,
    request_fields,
)
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


def reusable(record: dict, from_checkpoint: bool, retry_failed: bool) -> bool:
    """Whether a finished row is reused rather than sent again: a done row always; a failed
    one unless `retry_failed`, or unless it failed transiently in a killed job (the
    checkpoint's: its retries may have been cut short)."""
    if record["error"] is None:
        return True
    if retry_failed:
        return False
    return not (from_checkpoint and record.get("transient"))


def run(
    prompts: str,
    output: str,
    provenance: str,
    checkpoint: str,
    engine_log: str,
    job: settings.Generate,
    previous: str | None = None,
    retry_state: str | None = None,
    retry_param: str = "",
) -> dict:
    """Generate one shard; returns the provenance written to `provenance`.

    `previous`: the folder of the previous output (reused, then replaced); `retry_state`:
    the shard's retry state file, written with `retry_param` (the generate rule's param
    that reruns shards with failed rows, `plan.generate_retry_params`).
    """
    job_started = time.monotonic()
    g = job.generation
    engine = engines.engine_for(g)
    engines.check(job)
    try:
        template = engine.chat_template()
    except ChatTemplateError as exc:
        raise CliError(str(exc)) from exc
    chat_server = template.mode == SERVER
    route = engine.route(chat_server).name
    context = None
    if template.mode is not None or route != routes.TgiGenerate.name:
        context = {"route": route, "chat_template": template.record()}
    if (server_settings := engine.key_settings()) is not None:
        context = {**(context or {}), "engine": server_settings}
    fields = request_fields(g.model, g.revision, g.sampling, context)

    df = _read_prompts(prompts)
    requests = []
    for row_id, prompt in zip(df["id"].to_list(), df["prompt"].to_list(), strict=True):
        seed = derive_seed(job.dataset_version, row_id)
        requests.append(
            Request(row_id, template.render(prompt), seed, key_of(prompt, seed, fields))
        )

    keys = {r.id: r.key for r in requests}
    ckpt = Checkpoint(checkpoint, g.checkpoint_every)
    earlier = PreviousOutput(previous).load(keys) if previous else {}
    resumed = ckpt.load(keys)
    found = {**earlier, **resumed}
    reused = {i: rec for i, rec in found.items() if reusable(rec, i in resumed, g.retry_failed)}
    ckpt.keep({i: rec for i, rec in resumed.items() if i in reused})
    pending = [
        dataclasses.replace(r, prior_attempts=found[r.id]["attempts"]) if r.id in found else r
        for r in requests
        if r.id not in reused
    ]
    reuse = {
        "checkpoint": sum(i in resumed for i in reused),
        "previous_output": sum(i not in resumed for i in reused),
        "failed_sent_again": sum(r.id in found for r in pending),
    }
    log.info(
        "%d rows: %d reused (%d from %s, %d from the previous output), %d failed rows sent again",
        len(requests),
        len(reused),
        reuse["checkpoint"],
        checkpoint,
        reuse["previous_output"],
        reuse["failed_sent_again"],
    )

    # A server the job does not run gets the endpoint's query parameters and credentials.
    access = redact.endpoint_access(g.endpoint_url) if engine.external and g.endpoint_url else None
    routes.use_plain_http_client(g.concurrency, engine.external, access)
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
                    engine, started, ckpt, chat_server, pending, len(requests), len(reused), access
                )
            )
        except EngineDied as exc:
            raise CliError(f"{exc}; finished rows are kept in {checkpoint}") from exc
        generation_ended = time.monotonic()
        generation_s = generation_ended - started_at
        # The tail with fewer requests in flight than the concurrency (stream.py).
        drain_from = generation_ended if stream.drain_started is None else stream.drain_started
        drain_s = min(max(generation_ended - drain_from, 0.0), generation_s)
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

    # job_s: the job's wall time so far (servers stopped, output written): what its GPUs
    # were held for, with start-up and drain as its overhead (cosmopedia.accounting).
    timings = {
        "startup_s": startup_s,
        "generation_s": generation_s,
        "drain_s": drain_s,
        "job_s": time.monotonic() - job_started,
    }
    usage = {
        "gpus": engine.gpus(),
        "rows": len(pending),
        "tokens": stream.tokens,
    }
    prov = shard_provenance(
        job, started, stream, route, template, results, reuse, concurrency, timings, usage
    )
    io.write_json(prov, provenance)
    if previous:
        PreviousOutput(previous).save(output, fields)
    ckpt.path.unlink(missing_ok=True)
    if retry_state:
        write_retry_state(retry_state, retry_param, results)
    log.info(
        "done: %d rows (%d reused), %d failed %s, %d tokens, %d retries, startup %.1f s, "
        "generation %.1f s (drain %.1f s)",
        prov["rows"],
        len(reused),
        prov["failed"],
        prov["failures_by_cause"],
        prov["generated_tokens"],
        prov["retries"],
        startup_s,
        generation_s,
        drain_s,
    )
    failed = sum(r["error"] is not None for r in results)
    if failed:
        log.warning(
            "%d rows failed (their request did not succeed); a run with "
            'generation.retry_failed: true sends just them again (README, "Failed rows")',
            failed,
        )
    return prov


def write_retry_state(path: str, retry_param: str, results: list[dict]) -> None:
    """The shard's retry state, read by planning (`plan.generate_retry_params`): the retry
    param this job ran with and its failed rows (those whose request failed). Only a shard
    with failed rows, or one that ran with a retry param, has one."""
    failed = collections.Counter(failure_cause(r) for r in results if r["error"] is not None)
    if failed or retry_param:
        state = {
            "retry_param": retry_param,
            "failed_rows": sum(failed.values()),
            "failures_by_cause": dict(sorted(failed.items())),
        }
        io.write_json(state, path)
    else:
        Path(path).unlink(missing_ok=True)


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
    parser.add_argument(
        "--previous",
        help="folder outside the declared outputs keeping the last output (a hard link): "
        "its rows are reused while their request is unchanged",
    )
    parser.add_argument(
        "--retry-state",
        help="JSON file outside the declared outputs: the shard's failed rows, read by "
        "planning to rerun it with generation.retry_failed",
    )
    parser.add_argument(
        "--retry-param", default="", help="the generate rule's retry param, for --retry-state"
    )
    parser.add_argument("--engine-log", required=True, help="engine server log (appended)")
    parser.add_argument("--settings", required=True, help="generation settings (JSON or @file)")


def main(args) -> int:
    # One line per HTTP request would drown the progress lines.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    job = settings.load(settings.Generate, args.settings)
    run(
        args.prompts,
        args.output,
        args.provenance,
        args.checkpoint,
        args.engine_log,
        job,
        previous=args.previous,
        retry_state=args.retry_state,
        retry_param=args.retry_param,
    )
    return 0
