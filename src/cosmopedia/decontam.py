"""Decontamination against benchmark items, with Cosmopedia's method.

Cosmopedia's script (decontamination/decontaminate.py in huggingface/cosmopedia), step by step:

1. Tokens: Unicode NFD, characters of category Mn dropped, lowercased, `\\w+` words. The
   normalised text is the tokens joined by single spaces (difflib compares these strings).
2. Candidates: a (row, item) pair sharing at least one N-gram of tokens (N=10).
3. Verification: difflib.SequenceMatcher(None, row, item, autojunk=False); the matching
   blocks longer than `min_block_chars` characters, sliced from the row and joined, with
   runs of whitespace collapsed, are `matched`; ratio = len(matched) / len(item). The pair
   is contaminated when ratio > threshold.
4. A row is removed if any candidate is contaminated; its reported match is the highest
   ratio, ties broken by item id.

One deliberate difference: Cosmopedia checked only the first candidate found while
iterating a Python set (so the result depended on PYTHONHASHSEED, and an N-gram shared by
several items pointed at the last of them only). Here every candidate is checked and
nothing depends on set order, so a row is removed exactly when some item it shares an
N-gram with has ratio > threshold.

The same results, faster (bench/decontam.py compares with a plain implementation):
- Normalisation maps each distinct non-ASCII character once (the four steps work
  character by character, with two exceptions that take the whole-text path) and ASCII
  with one bytes.translate table, instead of a Python loop over every character.
- N-grams are looked up as 64-bit keys (polynomial hashes of the tokens' bytes) computed
  with numpy for a batch of rows at once; every key hit is then checked by comparing the
  N-gram's text with the item's, so a hash collision can never make a candidate.
- An item found verbatim in the row has ratio 1 without running difflib: difflib's first
  (longest) block is then the whole item and nothing is left on either side of it.
- difflib's algorithm runs in cydifflib (a compiled port with identical results) when
  that package is installed, else in the standard library.
- The benchmark index can be built once (`cosmopedia benchmarks --index`) and loaded by
  every shard job.

Items with fewer than N tokens have no N-gram and can never be found (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.io import read_parquet, write_parquet
from cosmopedia.ngram_index import ITEM_SCHEMA, BenchmarkIndex, token_bytes
from cosmopedia.plan import add_plan_arguments, plan_paths

try:  # identical results, compiled (see the module docstring)
    from cydifflib import SequenceMatcher

    DIFFLIB = "cydifflib"
except ImportError:  # pragma: no cover - depends on the environment
    from difflib import SequenceMatcher

    DIFFLIB = "difflib"

log = logging.getLogger("cosmopedia.decontam")

BATCH_ROWS = 64  # rows whose N-grams are looked up in one numpy pass
REPORT_SCHEMA = {
    "id": pl.String,
    "item_id": pl.String,
    "task_name": pl.String,
    "ratio": pl.Float64,
    "matched": pl.String,
    "confirmed": pl.Boolean,
    "best": pl.Boolean,
    "removed": pl.Boolean,
}
SUMMARY_SCHEMA = {
    "task_name": pl.String,
    "items": pl.UInt32,
    "candidates_checked": pl.UInt32,
    "candidates_confirmed": pl.UInt32,
    "candidates_kept": pl.UInt32,
    "rows_removed": pl.UInt32,
    "items_matched": pl.UInt32,
    "min_removed_ratio": pl.Float64,
    "max_removed_ratio": pl.Float64,
    "matched_item_ids": pl.String,
}


def default_settings(**given) -> step_settings.Decontamination:
    """The decontamination settings of the config schema, with `given` ones changed."""
    return step_settings.from_dict(step_settings.Decontamination, given, "decontamination")


def diff_ratio(row: str, item: str, min_block_chars: int) -> tuple[float, str]:
    """(ratio, matched) of a normalised item against a normalised row, as Cosmopedia.

    Cosmopedia lowercases both strings again before difflib; on tokens that are already
    lowercase that changes nothing (str.lower is idempotent), so it is not repeated here.
    """
    if not item:
        return 0.0, ""
    if len(item) > min_block_chars and item in row:
        # The longest common block is the whole item at its first occurrence; difflib's
        # recursion then has nothing left on either side: one block, ratio 1.
        return 1.0, item
    blocks = SequenceMatcher(None, row, item, autojunk=False).get_matching_blocks()
    parts = [row[a : a + size] for a, _, size in blocks if size > min_block_chars]
    matched = " ".join("".join(parts).split())
    return len(matched) / len(item), matched


@dataclass(frozen=True)
class Match:
    """One checked (row, item) candidate."""

    row_id: str
    item_id: str
    task_name: str
    ratio: float
    matched: str
    confirmed: bool  # ratio > threshold


def check_rows(
    rows: list[tuple[str, str]], index: BenchmarkIndex, settings: step_settings.Decontamination
) -> list[Match]:
    """Every candidate of (row id, text) rows, checked with difflib, in row order."""
    bufs = [token_bytes(text) for _, text in rows]
    matches = []
    for (row_id, _), buf, found in zip(rows, bufs, index.candidates(bufs), strict=True):
        if not found:
            continue
        row = b" ".join(buf.split()).decode("utf-8")
        for pos in found:
            ratio, matched = diff_ratio(row, index.norm(pos), settings.min_block_chars)
            confirmed = ratio > settings.threshold
            matches.append(
                Match(row_id, index.ids[pos], index.tasks[pos], ratio, matched, confirmed)
            )
    return matches


def best_match(matches: Iterable[Match]) -> Match | None:
    """The reported match of a row: highest ratio among confirmed, ties by item id."""
    confirmed = [m for m in matches if m.confirmed]
    return min(confirmed, key=lambda m: (-m.ratio, m.item_id)) if confirmed else None


def items_frame(items) -> pl.DataFrame:
    """A prepared items frame, or dicts with text, task_name and an optional id."""
    if isinstance(items, pl.DataFrame):
        return items.select(list(ITEM_SCHEMA))
    records = [dict(item) for item in items]
    for i, rec in enumerate(records):
        if rec.get("id") is None:
            rec["id"] = f"{rec['task_name']}/{i}"
    return pl.DataFrame(records, schema_overrides=ITEM_SCHEMA).select(list(ITEM_SCHEMA))


def find_contamination(
    texts: Mapping[str, str],
    items,
    settings: step_settings.Decontamination | None = None,
    index=None,
) -> list[Match]:
    """Every checked candidate of `texts` (id -> text), sorted by (row id, item id)."""
    settings = settings or default_settings()
    index = index or BenchmarkIndex(items_frame(items), settings.ngram)
    rows = sorted(texts.items())
    matches = []
    for start in range(0, len(rows), BATCH_ROWS):
        matches.extend(check_rows(rows[start : start + BATCH_ROWS], index, settings))
    return matches


def decontaminate(df: pl.DataFrame, index: BenchmarkIndex, settings: step_settings.Decontamination):
    """(kept rows, report): report has one row per checked candidate."""
    if index.ngram != settings.ngram:
        raise CliError(f"benchmark index has ngram={index.ngram}, settings say {settings.ngram}")
    if df["id"].is_duplicated().any():
        raise CliError("input has duplicate ids")
    texts = dict(zip(df["id"], df["text"].fill_null(""), strict=True))
    matches = find_contamination(texts, None, settings, index=index)
    by_row: dict[str, list[Match]] = {}
    for m in matches:
        by_row.setdefault(m.row_id, []).append(m)
    best = {row: best_match(ms) for row, ms in by_row.items()}
    removed = {row for row, m in best.items() if m is not None}
    report = pl.DataFrame(
        {
            "id": [m.row_id for m in matches],
            "item_id": [m.item_id for m in matches],
            "task_name": [m.task_name for m in matches],
            "ratio": [m.ratio for m in matches],
            "matched": [m.matched for m in matches],
            "confirmed": [m.confirmed for m in matches],
            "best": [best[m.row_id] is m for m in matches],
            "removed": [m.row_id in removed for m in matches],
        },
        schema=REPORT_SCHEMA,
    )
    kept = df.filter(~pl.col("id").is_in(sorted(removed)))
    log.info(
        "%d rows, %d items: %d candidates checked, %d rows removed (difflib: %s)",
        df.height,
        len(index.ids),
        report.height,
        len(removed),
        DIFFLIB,
    )
    return kept, report


def summarize(reports: Iterable[pl.DataFrame], items: pl.DataFrame) -> pl.DataFrame:
    """Per benchmark: candidates checked / confirmed / kept, rows removed, items matched.

    A removed row counts for the benchmark of its reported (best) match.
    """
    frames = [r.select(list(REPORT_SCHEMA)) for r in reports]
    report = pl.concat(frames) if frames else pl.DataFrame(schema=REPORT_SCHEMA)
    best = report.filter(pl.col("best"))
    per_task = report.group_by("task_name").agg(
        pl.len().alias("candidates_checked"),
        pl.col("confirmed").sum().alias("candidates_confirmed"),
        (~pl.col("removed")).sum().alias("candidates_kept"),
    )
    removed = best.group_by("task_name").agg(
        pl.len().alias("rows_removed"),
        pl.col("item_id").n_unique().alias("items_matched"),
        pl.col("ratio").min().alias("min_removed_ratio"),
        pl.col("ratio").max().alias("max_removed_ratio"),
        pl.col("item_id").unique().sort().str.join(",").alias("matched_item_ids"),
    )
    sizes = items.group_by("task_name").agg(pl.len().alias("items"))
    out = (
        sizes.join(per_task, on="task_name", how="full", coalesce=True)
        .join(removed, on="task_name", how="left")
        .with_columns(
            pl.col(
                "items",
                "candidates_checked",
                "candidates_confirmed",
                "candidates_kept",
                "rows_removed",
                "items_matched",
            ).fill_null(0),
        )
    )
    return out.select(list(SUMMARY_SCHEMA)).cast(SUMMARY_SCHEMA).sort("task_name")


# ---------------------------------------------------------------- CLI


def load_index(benchmarks: list[str], index_path: str | None, ngram: int) -> BenchmarkIndex:
    from cosmopedia.benchmarks import read_items

    items = read_items(benchmarks)
    if index_path:
        return BenchmarkIndex.load(items, index_path, ngram)
    return BenchmarkIndex(items, ngram)


def add_arguments(name, parser):
    if name == "decontaminate":
        parser.add_argument("--input", required=True, help="deduplicated shard (.parquet)")
        parser.add_argument(
            "--benchmarks", required=True, nargs="+", help="prepared items (.parquet|.jsonl)"
        )
        parser.add_argument("--index", help="N-gram index written by `cosmopedia benchmarks`")
        parser.add_argument("--output", required=True, help="kept rows (.parquet)")
        parser.add_argument("--report", required=True, help="checked candidates (.parquet)")
        parser.add_argument(
            "--settings", required=True, help="JSON: ngram, threshold, min_block_chars"
        )
    elif name == "decontam-summary":
        add_plan_arguments(parser, "reports", "REPORT", "per-shard reports (.parquet)")
        parser.add_argument("--benchmarks", required=True, help="prepared items (.parquet)")
        parser.add_argument("--output", required=True, help="per-benchmark summary (.tsv)")


def main(args) -> int:
    settings = step_settings.load(step_settings.Decontamination, args.settings)
    df = read_parquet(args.input)
    if "id" not in df.columns or "text" not in df.columns:
        raise CliError(f"{args.input}: needs columns id and text")
    index = load_index(args.benchmarks, args.index, settings.ngram)
    kept, report = decontaminate(df, index, settings)
    write_parquet(kept, args.output)
    write_parquet(report.sort(["id", "item_id"]), args.report, sort_by=None)
    return 0


def summary_main(args) -> int:
    from cosmopedia.benchmarks import read_items
    from cosmopedia.io import atomic_path

    reports = args.reports or list(plan_paths(args.plan, args.root, "decontam_report").values())
    summary = summarize(map(read_parquet, reports), read_items([args.benchmarks]))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as tmp:
        summary.write_csv(tmp, separator="\t", float_precision=4)
    return 0
