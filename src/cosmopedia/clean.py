"""Clean: generations -> kept rows + dropped rows (with the reason).

Drops failed and empty generations and texts under the minimum token length (Cosmopedia
kept generations of >= 150 tokens), and strips the greeting openers ("Hello...",
"Welcome, ...") that Cosmopedia removed. Nothing is lost: every dropped row goes to a
side file with its reason.
"""

from __future__ import annotations

import logging
import re

import polars as pl

from cosmopedia import settings as step_settings
from cosmopedia.io import read_parquet, write_parquet

log = logging.getLogger("cosmopedia.clean")


def strip_openers(text: str, patterns: list[re.Pattern]) -> str:
    for pattern in patterns:
        text = pattern.sub("", text, count=1)
    return text.strip()


def drop_reason(row: dict, min_tokens: int) -> str | None:
    if row["error"] is not None:
        return f"failed: {row['error'].split(':', 1)[0]}"
    if not row["text"]:
        return "empty"
    if row["text_token_length"] < min_tokens:
        return "too_short"
    return None


def clean_shard(
    generations: pl.DataFrame, settings: step_settings.Clean
) -> tuple[pl.DataFrame, pl.DataFrame]:
    patterns = [re.compile(p, re.IGNORECASE) for p in settings.boilerplate_openers]
    kept, dropped = [], []
    for row in generations.iter_rows(named=True):
        if row["text"] is not None:
            row["text"] = strip_openers(row["text"], patterns)
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


def add_arguments(name, parser):
    parser.add_argument("--input", required=True, help="generations shard (.parquet)")
    parser.add_argument("--output", required=True, help="kept rows (.parquet)")
    parser.add_argument("--dropped", required=True, help="dropped rows with `reason` (.parquet)")
    parser.add_argument(
        "--settings", required=True, help="JSON (or @file): min_tokens, boilerplate_openers"
    )


def main(args) -> int:
    settings = step_settings.load(step_settings.Clean, args.settings)
    kept, dropped = clean_shard(read_parquet(args.input), settings)
    write_parquet(kept, args.output)
    write_parquet(dropped, args.dropped)
    reasons = dropped.group_by("reason").len().sort("reason").rows() if dropped.height else []
    log.info("kept %d rows, dropped %d %s", kept.height, dropped.height, dict(reasons))
    return 0
