"""Clean: generations -> kept rows + dropped rows (with the reason).

Drops failed and empty generations and texts under the minimum token length (Cosmopedia
kept generations of >= 150 tokens), and (preset `project`) strips the greeting openers
("Hello...", "Welcome, ...") and the whitespace around texts. Preset `cosmopedia-v0.1`
keeps texts as generated, as v0.1 did. Nothing is lost: every dropped row goes to a side
file with its reason.

`text_token_length` is counted with the model's tokenizer when planning found its
tokenizer.json (cosmopedia.tokens), as Cosmopedia counted it (BOS included); otherwise it
stays the engine's count of generated tokens. The kept file's metadata (cosmopedia.clean)
says which.
"""

from __future__ import annotations

import logging
import re

import polars as pl

from cosmopedia import settings as step_settings
from cosmopedia import tokens
from cosmopedia.errors import CliError
from cosmopedia.hashing import sha256_file
from cosmopedia.io import CLEAN_KEY, read_parquet, write_parquet

log = logging.getLogger("cosmopedia.clean")


def strip_openers(text: str, patterns: list[re.Pattern], strip: bool = True) -> str:
    for pattern in patterns:
        text = pattern.sub("", text, count=1)
    return text.strip() if strip else text


def drop_reason(row: dict, min_tokens: int) -> str | None:
    if row["error"] is not None:
        return f"failed: {row['error'].split(':', 1)[0]}"
    if not row["text"]:
        return "empty"
    if row["text_token_length"] < min_tokens:
        return "too_short"
    return None


def clean_shard(
    generations: pl.DataFrame,
    settings: step_settings.Clean,
    counter: tokens.Counter | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    patterns = [re.compile(p, re.IGNORECASE) for p in settings.boilerplate_openers]
    rows = list(generations.iter_rows(named=True))
    for row in rows:
        if row["text"] is not None:
            row["text"] = strip_openers(row["text"], patterns, settings.strip)
    if counter is not None:
        counted = [i for i, row in enumerate(rows) if row["error"] is None and row["text"]]
        for i, n in zip(counted, counter.count([rows[i]["text"] for i in counted]), strict=True):
            rows[i]["text_token_length"] = n
    kept, dropped = [], []
    for row in rows:
        reason = drop_reason(row, settings.min_tokens)
        if reason is None:
            kept.append(row)
        else:
            dropped.append({**row, "reason": reason})
    schema = dict(generations.schema)
    return (
        pl.DataFrame(kept, schema=schema, orient="row"),
        pl.DataFrame(dropped, schema=schema | {"reason": pl.String}, orient="row"),
    )


def token_counter(job: step_settings.CleanJob) -> tuple[tokens.Counter | None, dict]:
    """The counter of the job's tokenizer (None: the engine's counts) and its record."""
    ref = job.tokenizer
    if ref is None:
        return None, {"token_count": "engine"}
    path = ref.path or tokens.cached_tokenizer(ref.model, ref.revision)
    where = ref.path or f"the Hub cache's {tokens.TOKENIZER_FILE} of {ref.model}@{ref.revision}"
    if path is None:
        raise CliError(f"{where}: not found (planning found it); rerun snakemake")
    if (digest := sha256_file(path)) != ref.sha256:
        raise CliError(
            f"{where}: sha256 {digest}, planned {ref.sha256}: the tokenizer changed since "
            "planning; rerun snakemake"
        )
    counter = tokens.Counter(path, job.clean.count_special_tokens)
    record = {
        "token_count": "tokenizer",
        "tokenizer": {"model": ref.model, "revision": ref.revision, "sha256": ref.sha256},
        "count_special_tokens": job.clean.count_special_tokens,
    }
    if ref.path:
        record["tokenizer"]["file"] = ref.path
    return counter, record


def add_arguments(name, parser):
    parser.add_argument("--input", required=True, help="generations shard (.parquet)")
    parser.add_argument("--output", required=True, help="kept rows (.parquet)")
    parser.add_argument("--dropped", required=True, help="dropped rows with `reason` (.parquet)")
    parser.add_argument(
        "--settings",
        required=True,
        help='JSON (or @file): {"clean": {min_tokens, boilerplate_openers, strip, token_count,'
        ' count_special_tokens}, "tokenizer": null | {path, model, revision, sha256}}',
    )


def main(args) -> int:
    job = step_settings.load(step_settings.CleanJob, args.settings)
    counter, record = token_counter(job)
    kept, dropped = clean_shard(read_parquet(args.input), job.clean, counter)
    write_parquet(kept, args.output, metadata={CLEAN_KEY: record})
    write_parquet(dropped, args.dropped)
    reasons = dropped.group_by("reason").len().sort("reason").rows() if dropped.height else []
    log.info(
        "kept %d rows, dropped %d %s; text_token_length: %s",
        kept.height, dropped.height, dict(reasons), record["token_count"],
    )  # fmt: skip
    return 0
