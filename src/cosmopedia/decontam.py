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
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from cosmopedia.cli import CliError, add_plan_arguments, load_settings, plan_paths
from cosmopedia.io import read_parquet, write_parquet

try:  # identical results, compiled (see the module docstring)
    from cydifflib import SequenceMatcher

    DIFFLIB = "cydifflib"
except ImportError:  # pragma: no cover - depends on the environment
    from difflib import SequenceMatcher

    DIFFLIB = "difflib"

log = logging.getLogger("cosmopedia.decontam")

DEFAULT_SETTINGS = {"ngram": 10, "threshold": 0.5, "min_block_chars": 5}
INDEX_FORMAT_VERSION = 2
BATCH_ROWS = 64  # rows whose N-grams are looked up in one numpy pass
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


# ---------------------------------------------------------------- normalisation

# ASCII bytes: A-Z -> a-z, every other byte that is not a \w character (letter, digit, _)
# -> space. Bytes of multi-byte UTF-8 characters are kept (those characters are \w by then).
_ASCII_TABLE = bytes(
    ord(chr(c).lower()) if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)
) + bytes(range(128, 256))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Non-ASCII character -> its image under Cosmopedia's normalisation (False: not per-char).
_CHAR_IMAGES: dict[str, str | bool] = {}


class _NotPerChar(Exception):
    pass


def _char_image(char: str) -> str | bool:
    """What NFD, dropping Mn, lowercasing and splitting on non-word characters make of one
    character alone.

    That is what they make of it inside any text too, unless canonical reordering could
    move a surviving combining character (combining class > 0 but not Mn) or the lowercase
    depends on the context (capital sigma): then False.
    """
    decomposed = unicodedata.normalize("NFD", char)
    if any(unicodedata.combining(c) and unicodedata.category(c) != "Mn" for c in decomposed):
        return False
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    if "\u03a3" in stripped:
        return False
    return "".join(c if c.isalnum() or c == "_" else " " for c in stripped.lower())


def _image(match: re.Match) -> str:
    char = match.group()
    image = _CHAR_IMAGES.get(char)
    if image is None:
        image = _CHAR_IMAGES[char] = _char_image(char)
    if image is False:
        raise _NotPerChar
    return image


def token_bytes(text: str) -> bytes:
    r"""UTF-8 of Cosmopedia's normalisation of `text`, every byte outside a token a space.

    Cosmopedia: NFD, drop category-Mn characters, lowercase, re.findall(r"\w+"). A str
    character matches \w exactly when it is alphanumeric (str.isalnum) or "_", so the
    tokens are the runs of such characters. All four steps work character by character
    (see _char_image for the exceptions, which take the whole-text path), so each distinct
    non-ASCII character is mapped once and ASCII by one bytes.translate table.
    """
    if not text.isascii():
        try:
            text = _NON_ASCII.sub(_image, text)
        except _NotPerChar:
            text = unicodedata.normalize("NFD", text)
            for char in set(_NON_ASCII.findall(text)):
                if unicodedata.category(char) == "Mn":
                    text = text.replace(char, "")
            text = text.lower()
            for char in set(_NON_ASCII.findall(text)):
                if not char.isalnum():
                    text = text.replace(char, " ")
    return text.encode("utf-8").translate(_ASCII_TABLE)


def tokens(text: str) -> list[str]:
    """Cosmopedia's tokenize(text)."""
    return [t.decode("utf-8") for t in token_bytes(text).split()]


def normalize(text: str) -> str:
    """The tokens joined by single spaces: the string difflib compares."""
    return b" ".join(token_bytes(text).split()).decode("utf-8")


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


# ---------------------------------------------------------------- N-gram keys
#
# A token's key is a polynomial hash of its bytes, an N-gram's key a polynomial hash of
# its tokens' keys, both modulo 2**64 (numpy's uint64 arithmetic wraps) and computed for
# a whole text at once from prefix sums. Equal N-grams get equal keys; every key hit is
# then checked by comparing the N-gram's text with the item's, so a hash collision can
# never make a candidate: the keys only have to be fast.

_BYTE_BASE = 0x9E3779B97F4A7C15
_TOKEN_BASE = 0xC2B2AE3D27D4EB4F
# Prefilter of the key lookups: one flag per value of a key's top 24 bits (16 MiB).
_FLAG_SHIFT = np.uint64(40)


class _Powers:
    """base**i and base**-i modulo 2**bits (odd base: invertible), grown on demand."""

    def __init__(self, base: int, dtype) -> None:
        self.dtype = np.dtype(dtype)
        modulus = 2 ** (8 * self.dtype.itemsize)
        self.base = self.dtype.type(base % modulus)
        self.inverse = self.dtype.type(pow(base, -1, modulus))
        self.pow = self.inv = np.ones(1, dtype=self.dtype)

    def upto(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pow) < size:
            size = max(size, 2 * len(self.pow))
            pw, iv = np.ones(size, self.dtype), np.ones(size, self.dtype)
            with np.errstate(over="ignore"):
                np.cumprod(np.full(size - 1, self.base), out=pw[1:])
                np.cumprod(np.full(size - 1, self.inverse), out=iv[1:])
            self.pow, self.inv = pw, iv
        return self.pow, self.inv


# Token keys are 32-bit (numpy's uint32 arithmetic is many times faster than uint64 on a
# long byte buffer; a collision only costs a failed check), N-gram keys 64-bit.
_BYTE_POWERS = _Powers(_BYTE_BASE, np.uint32)
_TOKEN_POWERS = _Powers(_TOKEN_BASE, np.uint64)


def _span_keys(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, powers) -> np.ndarray:
    """sum_k (values[s + k] + 1) * base**k over every span [s, e), modulo 2**bits."""
    pw, inv = powers.upto(len(values) + 1)
    with np.errstate(over="ignore"):
        terms = np.add(values, 1, dtype=powers.dtype)
        terms *= pw[: len(values)]
        prefix = np.zeros(len(values) + 1, dtype=powers.dtype)
        np.cumsum(terms, out=prefix[1:])
        return (prefix[ends] - prefix[starts]) * inv[starts]


def _token_spans(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Byte [start, end) of every token (run of non-space bytes) of a token_bytes buffer."""
    word = np.frombuffer(b" " + buf + b" ", dtype=np.uint8) != ord(" ")
    # A change between padded bytes k and k + 1 is a token start or end at byte k of buf.
    edges = np.flatnonzero(word[1:] != word[:-1])
    return edges[0::2], edges[1::2]


def _ngram_keys(buf: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key of the N-gram starting at each token, token starts, token ends)."""
    starts, ends = _token_spans(buf)
    if len(starts) < n:
        return np.zeros(0, dtype=np.uint64), starts, ends
    token_keys = _span_keys(np.frombuffer(buf, dtype=np.uint8), starts, ends, _BYTE_POWERS)
    first = np.arange(len(starts) - n + 1)
    return _span_keys(token_keys, first, first + n, _TOKEN_POWERS), starts, ends


@dataclass(frozen=True)
class Match:
    """One checked (row, item) candidate."""

    row_id: str
    item_id: str
    task_name: str
    ratio: float
    matched: str
    confirmed: bool  # ratio > threshold


def _sorted_items(items: pl.DataFrame) -> pl.DataFrame:
    items = items.select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA).sort("id")
    dupes = items.filter(pl.col("id").is_duplicated())["id"].unique().sort().to_list()
    if dupes:
        raise CliError(f"duplicate benchmark item ids: {dupes[:5]}")
    return items


class BenchmarkIndex:
    """Items sorted by id, their normalised texts and an N-gram -> items index.

    `blob` holds every item's normalised text (UTF-8), each followed by a newline: item i
    is blob[base[i]:base[i + 1] - 1]. A posting (key, item, at, size) says that the item
    has the N-gram blob[at:at + size]; one posting per (key, item), sorted by key, item.
    """

    ARRAYS = ("base", "n_tokens", "keys", "post_item", "post_at", "post_size")

    def __init__(self, items: pl.DataFrame, ngram: int):
        items = _sorted_items(items)
        self.ngram = n = ngram
        self.ids: list[str] = items["id"].to_list()
        self.tasks: list[str] = items["task_name"].to_list()
        norms = [b" ".join(token_bytes(text).split()) + b"\n" for text in items["text"]]
        self.blob = b"".join(norms)
        self.base = np.cumsum([0] + [len(norm) for norm in norms], dtype=np.int64)
        # With its newlines as spaces, the blob is one token_bytes buffer of all items.
        keys, starts, ends = _ngram_keys(self.blob.replace(b"\n", b" "), n)
        owner = np.searchsorted(self.base, starts, side="right") - 1
        self.n_tokens = np.bincount(owner, minlength=len(self.ids)).astype(np.int64)
        first = np.arange(len(keys))
        inside = owner[first] == owner[first + n - 1]  # no N-gram across two items
        first, keys = first[inside], keys[inside]
        item, at = owner[first], starts[first]
        size = ends[first + n - 1] - at
        order = np.lexsort((at, item, keys))
        keys, item, at, size = keys[order], item[order], at[order], size[order]
        unique = np.ones(len(keys), dtype=bool)
        unique[1:] = (keys[1:] != keys[:-1]) | (item[1:] != item[:-1])
        self.keys = keys[unique]
        self.post_item = item[unique].astype(np.int32)
        self.post_at = at[unique].astype(np.int64)
        self.post_size = size[unique].astype(np.int32)
        self._finish()

    def _finish(self) -> None:
        self.flags = np.zeros(1 << 24, dtype=bool)
        self.flags[self.keys >> _FLAG_SHIFT] = True
        self.too_short = int((self.n_tokens < self.ngram).sum())
        if self.too_short:
            log.warning(
                "%d benchmark items have < %d tokens: never matched", self.too_short, self.ngram
            )

    def norm(self, pos: int) -> str:
        return self.blob[self.base[pos] : self.base[pos + 1] - 1].decode("utf-8")

    def save(self, path) -> None:
        """Consecutive .npy records (np.savez would stamp the time into its zip)."""
        from cosmopedia.io import atomic_path

        ids = "\n".join(self.ids).encode("utf-8")  # ids hold no newline (checked on load)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.array([INDEX_FORMAT_VERSION, self.ngram, len(self.ids)], np.int64))
            for blob in (ids, self.blob):
                np.save(f, np.frombuffer(blob, dtype=np.uint8), allow_pickle=False)
            for name in self.ARRAYS:
                np.save(f, getattr(self, name), allow_pickle=False)

    @classmethod
    def load(cls, items: pl.DataFrame, path, ngram: int) -> BenchmarkIndex:
        """The index save() wrote, for these items (checked) and this N."""
        items = _sorted_items(items)
        self = cls.__new__(cls)
        with open(path, "rb") as f:
            version, built_for, n_items = np.load(f, allow_pickle=False).tolist()
            if version != INDEX_FORMAT_VERSION:
                raise CliError(f"{path}: index format {version}, expected {INDEX_FORMAT_VERSION}")
            ids = np.load(f, allow_pickle=False).tobytes().decode("utf-8")
            self.blob = np.load(f, allow_pickle=False).tobytes()
            for name in cls.ARRAYS:
                setattr(self, name, np.load(f, allow_pickle=False))
        self.ids = ids.split("\n") if n_items else []
        if built_for != ngram or self.ids != items["id"].to_list():
            raise CliError(
                f"{path} was built for other items or another ngram ({built_for}; this run "
                f"{ngram}); rerun `cosmopedia benchmarks`"
            )
        self.ngram = ngram
        self.tasks = items["task_name"].to_list()
        self._finish()
        return self

    def candidates(self, bufs: list[bytes]) -> list[list[int]]:
        """For each token_bytes buffer, the positions (= id order) of the items sharing an
        N-gram with it. One numpy pass over all buffers joined by spaces."""
        n = self.ngram
        found: list[set[int]] = [set() for _ in bufs]
        if not bufs or not len(self.keys):
            return [[] for _ in bufs]
        joined = b" ".join(bufs)
        keys, starts, ends = _ngram_keys(joined, n)
        maybe = np.flatnonzero(self.flags[keys >> _FLAG_SHIFT])
        if len(maybe):
            bases = np.cumsum([0] + [len(b) + 1 for b in bufs], dtype=np.int64)
            doc = np.searchsorted(bases, starts[maybe], side="right") - 1
            last_doc = np.searchsorted(bases, starts[maybe + n - 1], side="right") - 1
            maybe, doc = maybe[doc == last_doc], doc[doc == last_doc]  # within one buffer
            keys = keys[maybe]
            lo = np.searchsorted(self.keys, keys, side="left")
            hi = np.searchsorted(self.keys, keys, side="right")
            hits = zip(maybe.tolist(), lo.tolist(), hi.tolist(), doc.tolist(), strict=True)
            post_item, post_at, post_size = self.post_item, self.post_at, self.post_size
            for first, a, b, d in hits:
                gram = None
                for post in range(a, b):
                    item = int(post_item[post])
                    if item in found[d]:
                        continue
                    if gram is None:
                        gram = b" ".join(joined[starts[first] : ends[first + n - 1]].split())
                    at = int(post_at[post])
                    if self.blob[at : at + int(post_size[post])] == gram:  # exact, no collision
                        found[d].add(item)
        return [sorted(f) for f in found]


def check_rows(rows: list[tuple[str, str]], index: BenchmarkIndex, settings: dict) -> list[Match]:
    """Every candidate of (row id, text) rows, checked with difflib, in row order."""
    bufs = [token_bytes(text) for _, text in rows]
    matches = []
    for (row_id, _), buf, found in zip(rows, bufs, index.candidates(bufs), strict=True):
        if not found:
            continue
        row = b" ".join(buf.split()).decode("utf-8")
        for pos in found:
            ratio, matched = diff_ratio(row, index.norm(pos), settings["min_block_chars"])
            confirmed = ratio > settings["threshold"]
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
    texts: Mapping[str, str], items, settings: dict | None = None, index=None
) -> list[Match]:
    """Every checked candidate of `texts` (id -> text), sorted by (row id, item id)."""
    settings = parse_settings(settings or {})
    index = index or BenchmarkIndex(items_frame(items), settings["ngram"])
    rows = sorted(texts.items())
    matches = []
    for start in range(0, len(rows), BATCH_ROWS):
        matches.extend(check_rows(rows[start : start + BATCH_ROWS], index, settings))
    return matches


def decontaminate(df: pl.DataFrame, index: BenchmarkIndex, settings: dict):
    """(kept rows, report): report has one row per checked candidate."""
    settings = parse_settings(settings)
    if index.ngram != settings["ngram"]:
        raise CliError(f"benchmark index has ngram={index.ngram}, settings say {settings['ngram']}")
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
    settings = parse_settings(load_settings(args.settings))
    df = read_parquet(args.input)
    if "id" not in df.columns or "text" not in df.columns:
        raise CliError(f"{args.input}: needs columns id and text")
    index = load_index(args.benchmarks, args.index, settings["ngram"])
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
