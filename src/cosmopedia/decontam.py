"""Decontamination against benchmark items, with Cosmopedia's method.

Cosmopedia's script (decontamination/decontaminate.py in huggingface/cosmopedia), step by step:

1. Tokens: Unicode NFD, characters of category Mn dropped, lowercased, `\\w+` words. The
   normalised text is the tokens joined by single spaces (difflib compares these strings).
2. Candidates: a (row, item) pair sharing at least one N-gram of tokens (N=10).
3. Verification: difflib.SequenceMatcher(None, row, item, autojunk=False); the matching
   blocks longer than `min_block_chars` characters, sliced from the row and joined, with
   runs of whitespace collapsed, are `matched`; ratio = len(matched) / len(item). The pair
   is contaminated when ratio > threshold.
4. A row is removed if any candidate is contaminated.

One deliberate difference: Cosmopedia checked only the first candidate found while
iterating a Python set (so the result depended on PYTHONHASHSEED, and an N-gram shared by
several items pointed at the last of them only). Here a row is removed exactly when some
item it shares an N-gram with has ratio > threshold, and nothing depends on set order:

- by default (`report_all_matches: false`) a row's candidates are checked in a fixed
  order, the likeliest first (the largest share of the item's N-grams found in the row,
  ties by item id), and checking stops at the first confirmed one: the row is removed
  either way. The report lists the candidates checked: for a removed row those before
  the confirmed one (not contaminated) and the confirmed one, its reported (`best`)
  match; for a kept row all of them (none confirmed). A long document with many
  candidates costs one difflib run when its likeliest item is in it.
- with `report_all_matches: true` every candidate is checked and reported; a removed
  row's reported match is the highest ratio, ties broken by item id.

Both remove the same rows.

The same results, faster (bench/decontam.py compares with a plain implementation):
- Normalisation maps each distinct non-ASCII character once (the four steps work
  character by character, with two exceptions that take the whole-text path): ASCII
  through one bytes.translate table, runs of other characters through the ASCII codec's
  error handler, instead of a Python loop over every character.
- N-grams are looked up as 64-bit keys (polynomial hashes of the tokens' bytes) computed
  with numpy for a batch of rows at once, through a bit-array prefilter that fits in the
  CPU's cache; every key hit is then checked by comparing the N-gram's text with the
  item's, so a hash collision can never make a candidate.
- An item found verbatim in the row has ratio 1 without running difflib: difflib's first
  (longest) block is then the whole item and nothing is left on either side of it.
- Otherwise difflib's blocks longer than `min_block_chars` are found exactly from the
  maximal common substrings of row and item (numpy over exact q-gram keys), without
  searching for the shorter blocks, which do not count (`long_matching_blocks`); for
  `min_block_chars` < 2 or very large alphabets, with difflib's own search, in cydifflib
  (a compiled port with identical results) when that package is installed.
- The benchmark index can be built once (`cosmopedia benchmarks --index`) and loaded by
  every shard job.
- The job reads the shard once, keeps only a batch of texts as Python strings at a time,
  and writes the kept rows at zstd level 1 (KEPT_COMPRESSION_LEVEL).

Items with fewer than N tokens have no N-gram and can never be found (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
# zstd level of the kept rows: an intermediate file that only the dataset step reads (it
# writes the released files at io.PARQUET_COMPRESSION_LEVEL). On 175 MB of text (50,000
# documents, bench/decontam.py --large), CPU time and size by level: 9 (io's default)
# 4.4-5.1 s, 60.7 MB; 3: 1.1 s, 63.8 MB; 1: 0.7 s, 70.9 MB; reading takes ~0.25 s at any
# level. At level 9 writing cost more than finding the contamination (~2.3 s); level 1
# keeps the job's I/O below its work, for 17% more bytes until the dataset step has run.
# The same rows still give the same bytes.
KEPT_COMPRESSION_LEVEL = 1
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
    blocks = long_matching_blocks(row, item, min_block_chars)
    matched = " ".join("".join(row[a : a + size] for a, _, size in blocks).split())
    return len(matched) / len(item), matched


def long_matching_blocks(a: str, b: str, min_size: int) -> list[tuple[int, int, int]]:
    """The blocks longer than `min_size` of difflib's get_matching_blocks(a, b) (no junk,
    autojunk=False), exactly, found from the common substrings of `a` and `b` (`_common_runs`)
    rather than by difflib's scans of `a` (`_difflib_long_blocks`, the fallback).

    get_matching_blocks finds the longest match of a range (the earliest in `a`, then in
    `b`, of the longest), then recurses on the ranges left and right of it. Every match
    inside a range is at most as long as the range's longest, so below a block of
    `min_size` or less nothing longer can be found: those ranges are not searched. (difflib
    then merges adjacent blocks; without junk there are none: a block touching the longest
    match of its parent range would make it longer.) Each longest match longer than
    `min_size` lies on a maximal common substring of at least `min_size` + 1 characters;
    within a range it is such a substring cut to the range: the longest cut, the earliest.
    """
    runs = _common_runs(a, b, min_size + 1) if min_size + 1 >= _MIN_SEED else None
    if runs is None:
        return _difflib_long_blocks(a, b, min_size)
    a_start, b_start, length = runs
    diagonal = a_start - b_start
    a_end = a_start + length
    queue = [(0, len(a), 0, len(b))] if len(a_start) else []
    blocks = []
    while queue:
        alo, ahi, blo, bhi = queue.pop()
        start = np.maximum(np.maximum(a_start, alo), blo + diagonal)  # cut to the range
        size = np.minimum(np.minimum(a_end, ahi), bhi + diagonal) - start
        best = int(size.max())
        if best <= min_size:
            continue
        longest = np.flatnonzero(size == best)
        # the earliest in a, then in b (b's start is a's minus the diagonal)
        order = np.lexsort((start[longest] - diagonal[longest], start[longest]))
        c = longest[order[0]]
        i = int(start[c])
        j = i - int(diagonal[c])
        blocks.append((i, j, best))
        if alo < i and blo < j:
            queue.append((alo, i, blo, j))
        if i + best < ahi and j + best < bhi:
            queue.append((i + best, ahi, j + best, bhi))
    blocks.sort()
    return blocks


# Below blocks of 3 characters the common substrings are too many: difflib's scans.
_MIN_SEED = 3
# Prefilter of the substring lookups: one flag per value of 12 bits of a mixed key.
_RUN_FILTER_BITS = 12
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _empty_runs():
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, empty


def _packed(ids: np.ndarray, q: int, bits: int) -> np.ndarray:
    """The q characters from each position, packed exactly into a 64-bit key."""
    n = len(ids) - q + 1
    out = ids[:n].astype(np.uint64)
    for k in range(1, q):
        out |= ids[k : k + n].astype(np.uint64) << np.uint64(bits * k)
    return out


def _common_runs(a: str, b: str, q: int):
    """Every maximal common substring of `a` and `b` of `q` or more characters, as arrays
    (start in a, start in b, length) sorted by diagonal then start; None when q characters
    of these strings do not pack into 64 bits (more than 2**(64 // q) distinct ones).

    The q-grams of both are exact 64-bit keys (the characters' ranks in their alphabet,
    or their ASCII codes), so equal keys are equal substrings: a maximal common substring
    of length L is L - q + 1 consecutive q-gram matches on one diagonal."""
    ca = np.frombuffer(a.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cb = np.frombuffer(b.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if len(ca) < q or len(cb) < q:
        return _empty_runs()
    if max(int(ca.max()), int(cb.max())) < 128:
        ids_a, ids_b, bits = ca, cb, 7
    else:
        alphabet, ids = np.unique(np.concatenate([ca, cb]), return_inverse=True)
        ids_a, ids_b, bits = (
            ids[: len(ca)],
            ids[len(ca) :],
            max(1, (len(alphabet) - 1).bit_length()),
        )
    if bits * q > 64:
        return None
    ga, gb = _packed(ids_a, q, bits), _packed(ids_b, q, bits)
    shift = np.uint64(64 - _RUN_FILTER_BITS)
    flags = np.zeros(1 << _RUN_FILTER_BITS, dtype=bool)
    flags[(gb * _MIX) >> shift] = True
    ia = np.flatnonzero(flags[(ga * _MIX) >> shift])
    ga = ga[ia]
    order = np.argsort(gb, kind="stable")
    lo = np.searchsorted(gb[order], ga, "left")
    count = np.searchsorted(gb[order], ga, "right") - lo
    total = int(count.sum())
    if not total:
        return _empty_runs()
    ia = np.repeat(ia, count)  # every (i, j) with equal q-grams
    jb = order[np.repeat(lo - (np.cumsum(count) - count), count) + np.arange(total)]
    diagonal = ia - jb
    by_diagonal = np.lexsort((ia, diagonal))
    ia, jb, diagonal = ia[by_diagonal], jb[by_diagonal], diagonal[by_diagonal]
    first = np.ones(total, dtype=bool)
    first[1:] = (diagonal[1:] != diagonal[:-1]) | (ia[1:] != ia[:-1] + 1)
    starts = np.flatnonzero(first)
    length = np.diff(np.append(starts, total)) + (q - 1)
    return ia[starts], jb[starts], length


def _difflib_long_blocks(a: str, b: str, min_size: int) -> list[tuple[int, int, int]]:
    """long_matching_blocks with difflib's own search of each range."""
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    queue = [(0, len(a), 0, len(b))]
    blocks = []
    while queue:
        alo, ahi, blo, bhi = queue.pop()
        i, j, size = matcher.find_longest_match(alo, ahi, blo, bhi)
        if size > min_size:
            blocks.append((i, j, size))
            if alo < i and blo < j:
                queue.append((alo, i, blo, j))
            if i + size < ahi and j + size < bhi:
                queue.append((i + size, ahi, j + size, bhi))
    blocks.sort()
    return blocks


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
    """The checked candidates of (row id, text) rows, in row order, each row's in the order
    they were checked (likeliest first, see BenchmarkIndex.candidates). A row's checking
    stops at its first confirmed candidate unless settings.report_all_matches."""
    bufs = [token_bytes(text) for _, text in rows]
    every = settings.report_all_matches
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
            if confirmed and not every:
                break
    return matches


def best_match(matches: list[Match], every: bool = True) -> Match | None:
    """The reported match of a row, from its checked candidates in check order: with
    `every` candidate checked the highest ratio among confirmed (ties by item id), else
    the first confirmed (where checking stopped)."""
    confirmed = [m for m in matches if m.confirmed]
    if not confirmed:
        return None
    return min(confirmed, key=lambda m: (-m.ratio, m.item_id)) if every else confirmed[0]


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
    """The checked candidates of `texts` (id -> text), by row id, each row's in check order
    (every candidate with settings.report_all_matches, else up to the first confirmed)."""
    settings = settings or default_settings()
    index = index or BenchmarkIndex(items_frame(items), settings.ngram)
    rows = sorted(texts.items())
    matches = []
    for start in range(0, len(rows), BATCH_ROWS):
        matches.extend(check_rows(rows[start : start + BATCH_ROWS], index, settings))
    return matches


def _frame_contamination(
    df: pl.DataFrame, index: BenchmarkIndex, settings: step_settings.Decontamination
) -> list[Match]:
    """find_contamination of a frame's (id, text) rows, batch by batch: only a batch of
    texts is ever held as Python strings."""
    rows = df.select("id", pl.col("text").fill_null("")).sort("id")
    matches = []
    for start in range(0, rows.height, BATCH_ROWS):
        batch = rows.slice(start, BATCH_ROWS)
        pairs = list(zip(batch["id"].to_list(), batch["text"].to_list(), strict=True))
        matches.extend(check_rows(pairs, index, settings))
    return matches


def decontaminate(df: pl.DataFrame, index: BenchmarkIndex, settings: step_settings.Decontamination):
    """(kept rows, report): report has one row per checked candidate (module docstring)."""
    if index.ngram != settings.ngram:
        raise CliError(f"benchmark index has ngram={index.ngram}, settings say {settings.ngram}")
    if df["id"].is_duplicated().any():
        raise CliError("input has duplicate ids")
    matches = _frame_contamination(df, index, settings)
    by_row: dict[str, list[Match]] = {}
    for m in matches:
        by_row.setdefault(m.row_id, []).append(m)
    best = {row: best_match(ms, settings.report_all_matches) for row, ms in by_row.items()}
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
    write_parquet(kept, args.output, compression_level=KEPT_COMPRESSION_LEVEL)
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
