"""Decontamination: this project's implementation vs a plain one of the same method.

Both run Cosmopedia's method on the same generated documents (2-5 KB) and benchmark items
(~1,000) with planted overlaps: verbatim items (some with case, punctuation and accents
changed), items with some words replaced, and short fragments that share one 10-gram but
not enough text to pass the 0.5 ratio. The baseline, written here, is the straightforward
implementation: per-character NFD/Mn filtering, Python sets of 10-gram tuples, a dict from
10-gram to items, and difflib from the standard library on every candidate.

Prints docs/s per core (CPU time of one process) for both, the ratio (target >= 10x),
whether the flagged rows and every candidate's ratio are identical (they must be), the
index build vs load times, and the peak RSS of the real `cosmopedia benchmarks` and
`cosmopedia decontaminate` jobs on the same data.

    .venv/bin/python bench/decontam.py [--small]
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import polars as pl

from cosmopedia import decontam, ngram_index
from cosmopedia.benchmarks import read_items
from cosmopedia.io import write_parquet

NGRAM, THRESHOLD, MIN_BLOCK = 10, 0.5, 5
BIN = Path(sys.executable).parent

# ---------------------------------------------------------------- data

FUNCTION_WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "the of and to a in is that it for on with as was be by this are or from at an which "
    "but not have has had they you we he she his her their its can will would could should "
    "there these those about into than then them when where what who how why all some any "
    "each more most other such only also very just because while after before over under "
    "between through during without within again once here both few many much own same so "
    "don't it's can't I'm we'd you're they've isn't doesn't won't cannot let's that's"
).split()
ACCENTED = ["café", "naïve", "résumé", "Zürich", "façade", "coöperate"]


class Generator:
    """Pseudo-English: function words, a Zipf vocabulary, numbers, a few accents."""

    def __init__(self, seed: int, vocab_size: int = 20000):
        self.rng = random.Random(seed)
        cons, vow, ends = "bcdfghjklmnprstvwz", "aeiou", ["", "", "s", "ed", "ing", "ly", "tion"]
        words: set[str] = set()
        while len(words) < vocab_size:
            syll = self.rng.randint(1, 4)
            stem = "".join(self.rng.choice(cons) + self.rng.choice(vow) for _ in range(syll))
            words.add(stem + self.rng.choice(ends))
        self.words = sorted(words)
        self.cum = list(itertools.accumulate(1 / (i + 1) ** 1.05 for i in range(vocab_size)))

    def word(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(FUNCTION_WORDS)
        if r < 0.47:
            unit = self.rng.choice(["", " km", "kg", "%", "s"])
            return f"{self.rng.randint(1, 2000)}{unit}"
        if r < 0.475:
            return self.rng.choice(ACCENTED)
        return self.rng.choices(self.words, cum_weights=self.cum)[0]

    def sentence(self, n: int) -> str:
        words = [self.word() for _ in range(n)]
        if n > 4 and self.rng.random() < 0.3:
            words[self.rng.randrange(1, n - 1)] += ","
        text = " ".join(words)
        return text[0].upper() + text[1:] + self.rng.choice(".....?!")

    def text(self, n_chars: int) -> str:
        parts: list[str] = []
        size = 0
        while size < n_chars:
            parts.append(self.sentence(self.rng.randint(8, 24)))
            size += len(parts[-1]) + 1
            if self.rng.random() < 0.15:
                parts[-1] += "\n\n"
        return " ".join(parts).replace("\n\n ", "\n\n")

    def item(self) -> str:
        question = self.sentence(self.rng.randint(12, 45))[:-1] + "?"
        return f"{question} {self.sentence(self.rng.randint(1, 8))}"


def disguise(rng: random.Random, text: str) -> str:
    """Same tokens after normalisation: case, punctuation and accents changed."""
    text = text.upper() if rng.random() < 0.5 else text
    text = text.replace(" ", rng.choice([" ", "  ", " - ", ", "]))
    return text.replace("E", "É").replace("a", "á")


def make_data(n_docs: int, n_items: int, seed: int = 20241):
    gen = Generator(seed)
    rng = gen.rng
    items = [
        {"id": f"{task}/{i:04d}", "task_name": task, "text": gen.item()}
        for i, task in zip(
            range(n_items), itertools.cycle(["arc_easy", "hellaswag", "mmlu", "piqa"])
        )
    ]
    docs, planted = [], {"verbatim": set(), "disguised": set(), "edited": set(), "fragment": set()}
    for d in range(n_docs):
        doc_id = f"doc/{d:05d}"
        body = gen.text(rng.randint(2000, 5000))
        r = rng.random()
        kind = (
            "verbatim"
            if r < 0.01
            else "disguised"
            if r < 0.02
            else "edited"
            if r < 0.03
            else "fragment"
            if r < 0.05
            else None
        )
        if kind:
            item = rng.choice(items)["text"]
            words = item.split()
            if kind == "disguised":
                insert = disguise(rng, item)
            elif kind == "edited":  # ~15% of the words replaced, a 10-gram kept intact
                keep = rng.randrange(0, max(1, len(words) - 10))
                for pos in rng.sample(range(len(words)), max(1, len(words) // 7)):
                    if not keep <= pos < keep + 10:
                        words[pos] = gen.word()
                insert = " ".join(words)
            elif kind == "fragment":
                start = rng.randrange(0, max(1, len(words) - 12))
                insert = " ".join(words[start : start + rng.randint(10, 12)])
            else:
                insert = item
            cut = rng.randrange(len(body))
            body = f"{body[:cut]} {insert} {body[cut:]}"
            planted[kind].add(doc_id)
        docs.append({"id": doc_id, "text": body})
    return pl.DataFrame(docs), pl.DataFrame(items), planted


# ---------------------------------------------------------------- baseline


def base_tokenize(text: str) -> list[str]:
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return re.findall(r"\w+", text.lower())


def base_ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return set(zip(*[tokens[i:] for i in range(n)], strict=False))


def base_ratio(row_text: str, item_text: str) -> float:
    matcher = difflib.SequenceMatcher(None, row_text, item_text, autojunk=False)
    parts = [row_text[a : a + size] for a, _, size in matcher.get_matching_blocks() if size > 5]
    match = " ".join("".join(parts).split())
    return len(match) / len(item_text) if item_text else 0.0


class Baseline:
    def __init__(self, items: pl.DataFrame):
        self.ids = items["id"].to_list()
        self.norm = []
        self.index: dict[tuple[str, ...], set[int]] = {}
        for pos, text in enumerate(items["text"]):
            toks = base_tokenize(text)
            self.norm.append(" ".join(toks))
            for gram in base_ngrams(toks, NGRAM):
                self.index.setdefault(gram, set()).add(pos)

    def run(self, docs: pl.DataFrame):
        """(flagged row ids, {(row id, item id): ratio} of every candidate)."""
        flagged, ratios = set(), {}
        for doc_id, text in zip(docs["id"], docs["text"], strict=True):
            toks = base_tokenize(text)
            candidates = set()
            for gram in base_ngrams(toks, NGRAM):
                candidates |= self.index.get(gram, set())
            row_text = " ".join(toks)
            for pos in candidates:
                ratio = base_ratio(row_text, self.norm[pos])
                ratios[(doc_id, self.ids[pos])] = ratio
                if ratio > THRESHOLD:
                    flagged.add(doc_id)
        return flagged, ratios


# ---------------------------------------------------------------- measurements


def cpu_time(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


# Runs a command and reports its peak RSS. A small parent, because Linux starts a forked
# child's peak RSS at its parent's: measured from this (big) process it would read ~180 MB.
_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def max_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a command."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, *cmd], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return int(proc.stderr.strip().splitlines()[-1]) / 1024, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="600 docs, 300 items")
    parser.add_argument("--docs", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument(
        "--index-items",
        type=int,
        help="items of the index build/load timing (default 33,191: the eval splits of the "
        "eight benchmarks; --small: 5,000)",
    )
    args = parser.parse_args()
    n_docs = args.docs or (600 if args.small else 3000)
    n_items = args.items or (300 if args.small else 1000)
    n_index_items = args.index_items or (5000 if args.small else 33191)
    settings = decontam.default_settings(
        ngram=NGRAM, threshold=THRESHOLD, min_block_chars=MIN_BLOCK
    )

    docs, items, planted = make_data(n_docs, n_items)
    kb = docs["text"].str.len_bytes().mean() / 1000
    print(f"data: {n_docs} docs ({kb:.1f} KB avg), {n_items} items; planted: "
          + ", ".join(f"{k} {len(v)}" for k, v in planted.items()))  # fmt: skip
    print(f"difflib implementation of this project: {decontam.DIFFLIB}")

    baseline, base_build = cpu_time(lambda: Baseline(items))
    (base_flagged, base_ratios), base_cpu = cpu_time(lambda: baseline.run(docs))
    index, build = cpu_time(lambda: ngram_index.BenchmarkIndex(items, NGRAM))
    (kept, report), ours_cpu = cpu_time(lambda: decontam.decontaminate(docs, index, settings))

    ours_flagged = set(docs["id"]) - set(kept["id"])
    pairs = zip(report["id"], report["item_id"], strict=True)
    ours_ratios = dict(zip(pairs, report["ratio"], strict=True))
    same_flagged = ours_flagged == base_flagged
    same_ratios = ours_ratios.keys() == base_ratios.keys() and all(
        abs(ours_ratios[k] - base_ratios[k]) < 1e-12 for k in base_ratios
    )
    expected = planted["verbatim"] | planted["disguised"]
    found_planted = expected <= ours_flagged

    with tempfile.TemporaryDirectory(prefix="bench-decontam-") as tmp:
        tmp = Path(tmp)
        items_in, items_out, index_file = tmp / "in.jsonl", tmp / "items.parquet", tmp / "idx"
        items_in.write_text("".join(json.dumps(r) + "\n" for r in items.iter_rows(named=True)))
        write_parquet(docs, tmp / "docs.parquet")
        s = json.dumps(settings)
        prep_rss, prep_wall = max_rss_mb(
            [str(BIN / "cosmopedia"), "benchmarks", "--inputs", str(items_in), "--output",
             str(items_out), "--index", str(index_file), "--settings", s]
        )  # fmt: skip
        job = [str(BIN / "cosmopedia"), "decontaminate", "--input", str(tmp / "docs.parquet"),
               "--benchmarks", str(items_out), "--output", str(tmp / "kept.parquet"),
               "--report", str(tmp / "report.parquet"), "--settings", s]  # fmt: skip
        rss, wall = max_rss_mb([*job, "--index", str(index_file)])
        rss_noindex, wall_noindex = max_rss_mb(job)
        load = cpu_time(
            lambda: ngram_index.BenchmarkIndex.load(read_items([items_out]), index_file, NGRAM)
        )[1]
        same_job = pl.read_parquet(tmp / "kept.parquet")["id"].to_list() == kept["id"].to_list()

    # Is saving the index worth it? Build vs load at the size of the real benchmark set.
    gen = Generator(7)
    many = decontam.items_frame(
        {"id": f"t/{i:06d}", "task_name": "t", "text": gen.item()} for i in range(n_index_items)
    )
    big, big_build = cpu_time(lambda: ngram_index.BenchmarkIndex(many, NGRAM))
    with tempfile.TemporaryDirectory(prefix="bench-decontam-") as tmp:
        big.save(Path(tmp) / "idx")
        index_mb = (Path(tmp) / "idx").stat().st_size / 1e6
        big_load = cpu_time(
            lambda: ngram_index.BenchmarkIndex.load(many, Path(tmp) / "idx", NGRAM)
        )[1]

    ratio = base_cpu / ours_cpu
    rows = [
        ("baseline (sets of tuples + stdlib difflib)", f"{n_docs / base_cpu:,.0f}", "1.0x"),
        ("cosmopedia.decontam", f"{n_docs / ours_cpu:,.0f}", f"{ratio:.1f}x"),
    ]
    print("\n| implementation | docs/s per core | speed-up |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(f"\nflagged rows: ours {len(ours_flagged)}, baseline {len(base_flagged)}; "
          f"identical: {same_flagged}; every candidate's ratio identical: {same_ratios} "
          f"({len(base_ratios)} candidates); all verbatim/disguised plants flagged: "
          f"{found_planted}; CLI job agrees: {same_job}")  # fmt: skip
    print(f"index of {n_items} items: built in {build:.2f} s (baseline's dict {base_build:.2f} s), "
          f"loaded in {load:.2f} s; of {n_index_items:,} items: built in {big_build:.2f} s, "
          f"loaded in {big_load:.2f} s ({index_mb:.0f} MB file)")  # fmt: skip
    print(f"peak RSS: benchmarks job {prep_rss:.0f} MB ({prep_wall:.1f} s); decontaminate job "
          f"{rss:.0f} MB ({wall:.1f} s) with the saved index, {rss_noindex:.0f} MB "
          f"({wall_noindex:.1f} s) building it")  # fmt: skip
    target = ratio >= 10
    print(f"\nRESULT speed-up {ratio:.1f}x (target >= 10x: {'met' if target else 'NOT met'}), "
          f"identical flagged sets: {same_flagged}")  # fmt: skip
    return 0 if same_flagged and same_ratios and found_planted and same_job else 1


if __name__ == "__main__":
    sys.exit(main())
