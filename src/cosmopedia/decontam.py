"""Decontamination against benchmark items, with Cosmopedia's method.

1. Normalise: Unicode NFD, combining marks dropped, lowercased; tokens are `\\w+` words;
   the normalised text is the tokens joined by single spaces (punctuation and line breaks
   then never decide a match; difflib compares these strings).
2. Candidates: a (row, item) pair sharing at least one N-gram of tokens (N=10).
3. Check every candidate, in item-id order: difflib.SequenceMatcher(None, item, row,
   autojunk=False) matching blocks longer than `min_block_chars` characters, joined;
   ratio = len(joined) / len(item). The pair is contaminated when ratio > threshold.
4. A row is removed if any candidate is contaminated; its reported match is the highest
   ratio, ties broken by item id. Cosmopedia's script took the first candidate found in a
   Python set (so it depended on PYTHONHASHSEED); here nothing depends on set order.

Items with fewer than N tokens have no N-gram and can never be found (logged).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cosmopedia.cli import CliError, load_settings
from cosmopedia.io import read_parquet, write_parquet

log = logging.getLogger("cosmopedia.decontam")

DEFAULT_SETTINGS = {"ngram": 10, "threshold": 0.5, "min_block_chars": 5}
_WORD = re.compile(r"\w+")
ITEM_SCHEMA = {"id": pl.String, "task_name": pl.String, "text": pl.String}
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


def parse_settings(raw: dict) -> dict:
    unknown = sorted(set(raw) - set(DEFAULT_SETTINGS))
    if unknown:
        raise CliError(
            f"unknown decontamination settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}"
        )
    settings = DEFAULT_SETTINGS | raw
    if not isinstance(settings["ngram"], int) or settings["ngram"] < 1:
        raise CliError(f"ngram must be a positive integer, got {settings['ngram']!r}")
    if not isinstance(settings["min_block_chars"], int) or settings["min_block_chars"] < 0:
        raise CliError(
            f"min_block_chars must be an integer >= 0, got {settings['min_block_chars']!r}"
        )
    if not isinstance(settings["threshold"], int | float) or not 0 <= settings["threshold"] <= 1:
        raise CliError(f"threshold must be a number in [0, 1], got {settings['threshold']!r}")
    return settings


def tokens(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(stripped.lower())


def normalize(text: str) -> str:
    return " ".join(tokens(text))


def ngram_keys(toks: list[str], n: int) -> set[int]:
    """Stable 64-bit keys of the token N-grams (tokens never contain a space)."""
    return {
        int.from_bytes(
            hashlib.blake2b(" ".join(toks[i : i + n]).encode(), digest_size=8).digest(), "little"
        )
        for i in range(len(toks) - n + 1)
    }


@dataclass(frozen=True)
class Match:
    """One checked (row, item) candidate."""

    row_id: str
    item_id: str
    task_name: str
    ratio: float
    matched: str
    confirmed: bool  # ratio > threshold


def match_ratio(norm_item: str, matcher: difflib.SequenceMatcher, min_block_chars: int):
    """(ratio, joined blocks) of an item against the row already set as the matcher's seq2."""
    matcher.set_seq1(norm_item)
    blocks = [
        norm_item[a : a + size]
        for a, _, size in matcher.get_matching_blocks()
        if size > min_block_chars
    ]
    matched = "".join(blocks)
    return len(matched) / len(norm_item), matched


class BenchmarkIndex:
    """Items sorted by id and an N-gram -> item positions index, built once."""

    def __init__(self, items: pl.DataFrame, ngram: int):
        items = items.sort("id")
        dupes = items.filter(pl.col("id").is_duplicated())["id"].unique().sort().to_list()
        if dupes:
            raise CliError(f"duplicate benchmark item ids: {dupes[:5]}")
        self.ngram = ngram
        self.ids = items["id"].to_list()
        self.tasks = items["task_name"].to_list()
        self.norm: list[str] = []
        self.index: dict[int, list[int]] = {}
        self.too_short = 0
        for pos, text in enumerate(items["text"]):
            toks = tokens(text)
            self.norm.append(" ".join(toks))
            keys = ngram_keys(toks, ngram)
            self.too_short += not keys
            for key in keys:
                # Positions arrive in increasing order: every list is sorted by item id.
                self.index.setdefault(key, []).append(pos)
        if self.too_short:
            log.warning("%d benchmark items have < %d tokens: never matched", self.too_short, ngram)

    def candidates(self, toks: list[str]) -> list[int]:
        found: set[int] = set()
        for key in ngram_keys(toks, self.ngram):
            found.update(self.index.get(key, ()))
        return sorted(found)


def check_row(row_id: str, text: str, index: BenchmarkIndex, settings: dict) -> list[Match]:
    toks = tokens(text)
    found = index.candidates(toks)
    if not found:
        return []
    # difflib caches its analysis of seq2: the row is set once for all its candidates.
    matcher = difflib.SequenceMatcher(None, "", " ".join(toks), autojunk=False)
    matches = []
    for pos in found:
        ratio, matched = match_ratio(index.norm[pos], matcher, settings["min_block_chars"])
        confirmed = ratio > settings["threshold"]
        matches.append(Match(row_id, index.ids[pos], index.tasks[pos], ratio, matched, confirmed))
    return matches


def best_match(matches: Iterable[Match]) -> Match | None:
    """The reported match of a row: highest ratio among confirmed, ties by item id."""
    confirmed = [m for m in matches if m.confirmed]
    return min(confirmed, key=lambda m: (-m.ratio, m.item_id)) if confirmed else None


def _items_frame(items) -> pl.DataFrame:
    if isinstance(items, pl.DataFrame):
        frame = items
    else:
        records = [dict(item) for item in items]
        for i, rec in enumerate(records):
            rec.setdefault("id", None)
            if rec["id"] is None:
                rec["id"] = f"{rec['task_name']}/{i}"
        frame = pl.DataFrame(records, schema_overrides=ITEM_SCHEMA)
    return frame.select(list(ITEM_SCHEMA))


def find_contamination(
    texts: Mapping[str, str], items, settings: dict | None = None, index=None
) -> list[Match]:
    """Every checked candidate of `texts` (id -> text), sorted by (row id, item id).

    `items`: a prepare_benchmarks() frame or dicts with text, task_name and optional id.
    """
    settings = parse_settings(settings or {})
    index = index or BenchmarkIndex(_items_frame(items), settings["ngram"])
    matches = []
    for row_id in sorted(texts):
        matches.extend(check_row(row_id, texts[row_id], index, settings))
    return matches


def _read_records(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return read_parquet(path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return pl.DataFrame(records, infer_schema_length=None)
    raise CliError(f"{path}: benchmarks must be .jsonl or .parquet")


def prepare_benchmarks(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Benchmark items (id, task_name, text) sorted by id.

    A missing or null id becomes "{task_name}/{i}", i = the record's 0-based index in its
    file (blank lines in JSONL are not counted).
    """
    frames = []
    for path in map(Path, paths):
        df = _read_records(path)
        for column in ("text", "task_name"):
            if column not in df.columns:
                raise CliError(f"{path}: missing column {column!r}")
            if df[column].null_count():
                raise CliError(f"{path}: null values in column {column!r}")
        default = pl.col("task_name") + "/" + pl.int_range(pl.len()).cast(pl.String)
        ids = pl.col("id").cast(pl.String).fill_null(default) if "id" in df.columns else default
        frames.append(df.with_columns(id=ids).select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA))
    items = pl.concat(frames) if frames else pl.DataFrame(schema=ITEM_SCHEMA)
    dupes = items.filter(pl.col("id").is_duplicated())["id"].unique().sort().to_list()
    if dupes:
        raise CliError(f"duplicate benchmark item ids (give an `id` column): {dupes[:5]}")
    return items.sort("id")


def decontaminate(df: pl.DataFrame, items: pl.DataFrame, settings: dict):
    """(kept rows, report): report has one row per checked candidate."""
    settings = parse_settings(settings)
    if df["id"].is_duplicated().any():
        raise CliError("input has duplicate ids")
    index = BenchmarkIndex(items, settings["ngram"])
    texts = dict(zip(df["id"], df["text"].fill_null(""), strict=True))
    matches = find_contamination(texts, None, settings, index=index)
    by_row: dict[str, list[Match]] = {}
    for m in matches:
        by_row.setdefault(m.row_id, []).append(m)
    best = {row: best_match(ms) for row, ms in by_row.items()}
    removed = {row for row, m in best.items() if m is not None}
    report = pl.DataFrame(
        [
            {
                "id": m.row_id,
                "item_id": m.item_id,
                "task_name": m.task_name,
                "ratio": m.ratio,
                "matched": m.matched,
                "confirmed": m.confirmed,
                "best": best[m.row_id] is m,
                "removed": m.row_id in removed,
            }
            for m in matches
        ],
        schema=REPORT_SCHEMA,
    )
    kept = df.filter(~pl.col("id").is_in(sorted(removed)))
    log.info(
        "%d rows, %d items: %d candidates checked, %d rows removed",
        df.height,
        len(index.ids),
        report.height,
        len(removed),
    )
    return kept, report


def add_arguments(name, parser):
    parser.add_argument("--input", required=True, help="deduplicated shard (.parquet)")
    parser.add_argument("--benchmarks", required=True, nargs="+", help="items (.jsonl|.parquet)")
    parser.add_argument("--output", required=True, help="kept rows (.parquet)")
    parser.add_argument("--report", required=True, help="checked candidates (.parquet)")
    parser.add_argument("--settings", required=True, help="JSON: ngram, threshold, min_block_chars")


def main(args) -> int:
    settings = load_settings(args.settings)
    df = read_parquet(args.input)
    if "id" not in df.columns or "text" not in df.columns:
        raise CliError(f"{args.input}: needs columns id and text")
    kept, report = decontaminate(df, prepare_benchmarks(args.benchmarks), settings)
    write_parquet(kept, args.output)
    write_parquet(report.sort(["id", "item_id"]), args.report, sort_by=None)
    return 0
