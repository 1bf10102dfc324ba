"""Decontamination: N-gram candidates confirmed by difflib, deterministically."""

from __future__ import annotations

import json
import random
import string

import polars as pl
import pytest

from cosmopedia import cli
from cosmopedia.cli import CliError
from cosmopedia.decontam import (
    find_contamination,
    normalize,
    prepare_benchmarks,
)
from cosmopedia.io import read_parquet, write_parquet

RNG = random.Random(7)
VOCAB = sorted(
    {"".join(RNG.choices(string.ascii_lowercase, k=RNG.randint(3, 8))) for _ in range(800)}
)


def words(n: int, seed: int) -> str:
    return " ".join(random.Random(seed).choices(VOCAB, k=n))


QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?"
)
ITEMS = [
    {"id": "gsm8k/0", "task_name": "gsm8k", "text": QUESTION},
    {"id": "mmlu/3", "task_name": "mmlu", "text": words(60, 1)},
    {"id": "mmlu/9", "task_name": "mmlu", "text": words(40, 2)},
]
SHARED_10GRAM = " ".join(ITEMS[1]["text"].split()[20:30])
TEXTS = {
    "verbatim": f"{words(80, 3)}. Here is a problem: {QUESTION} Let us solve it. {words(50, 4)}",
    "one-ngram": f"{words(70, 5)} {SHARED_10GRAM} {words(70, 6)}",
    "unrelated": words(200, 7),
}


def by_row(matches):
    out = {}
    for m in matches:
        out.setdefault(m.row_id, []).append(m)
    return out


def test_verbatim_item_removed_partial_overlap_kept_unrelated_ignored():
    matches = by_row(find_contamination(TEXTS, ITEMS))
    [verbatim] = matches["verbatim"]
    assert verbatim.item_id == "gsm8k/0" and verbatim.confirmed and verbatim.ratio > 0.5
    assert verbatim.ratio == pytest.approx(1.0)
    assert verbatim.matched == normalize(QUESTION)
    [partial] = matches["one-ngram"]
    assert partial.item_id == "mmlu/3" and not partial.confirmed and partial.ratio <= 0.5
    assert SHARED_10GRAM in partial.matched
    assert "unrelated" not in matches


def test_order_of_items_does_not_matter():
    expected = find_contamination(TEXTS, ITEMS)
    for seed in range(3):
        shuffled = ITEMS[:]
        random.Random(seed).shuffle(shuffled)
        assert find_contamination(TEXTS, shuffled) == expected


def test_accents_case_and_punctuation_are_normalised():
    assert normalize("Ça  CRÈME-brûlée, naïve!\nÉTÉ") == "ca creme brulee naive ete"
    shouted = QUESTION.upper().replace("a", "á").replace("A", "Á").replace(",", " ;")
    [m] = find_contamination({"row": f"Intro. {shouted} End."}, ITEMS)
    assert m.confirmed and m.ratio == pytest.approx(1.0)


def test_threshold_and_ngram_settings():
    [m] = find_contamination({"r": TEXTS["verbatim"]}, ITEMS, {"threshold": 1.0})
    assert not m.confirmed  # ratio must be strictly greater
    # A 9-token overlap is not a candidate at N=10 but is at N=5.
    nine = " ".join(ITEMS[2]["text"].split()[:9])
    assert find_contamination({"r": f"{words(30, 8)} {nine}"}, ITEMS) == []
    assert find_contamination({"r": f"{words(30, 8)} {nine}"}, ITEMS, {"ngram": 5})
    with pytest.raises(CliError, match="unknown decontamination settings"):
        find_contamination({}, ITEMS, {"n_gram": 10})


def test_best_match_wins_ties_by_item_id(tmp_path):
    items = [
        {"id": "b", "task_name": "t", "text": QUESTION},
        {"id": "a", "task_name": "t", "text": QUESTION},
        {"id": "c", "task_name": "t", "text": ITEMS[1]["text"]},
    ]
    bench = tmp_path / "items.jsonl"
    bench.write_text("".join(json.dumps(i) + "\n" for i in items))
    rows = pl.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "text": [TEXTS["verbatim"] + " " + ITEMS[1]["text"], TEXTS["unrelated"], "x"],
            "extra": [1, 2, 3],
        }
    )
    write_parquet(rows, tmp_path / "in.parquet")
    argv = ["decontaminate", "--input", str(tmp_path / "in.parquet"), "--benchmarks", str(bench)]
    argv += ["--output", str(tmp_path / "kept.parquet"), "--report", str(tmp_path / "rep.parquet")]
    assert cli.main([*argv, "--settings", '{"ngram": 10}']) == 0
    kept = read_parquet(tmp_path / "kept.parquet")
    assert kept.equals(rows.filter(pl.col("id") != "r1"))
    report = read_parquet(tmp_path / "rep.parquet")
    assert report.columns == [
        "id",
        "item_id",
        "task_name",
        "ratio",
        "matched",
        "confirmed",
        "best",
        "removed",
    ]
    assert report["item_id"].to_list() == ["a", "b", "c"]
    assert report["best"].to_list() == [True, False, False]
    assert report["confirmed"].to_list() == [True, True, True]
    assert report["removed"].all()
    first = (tmp_path / "rep.parquet").read_bytes()
    assert cli.main([*argv, "--settings", '{"ngram": 10}']) == 0
    assert (tmp_path / "rep.parquet").read_bytes() == first


def test_prepare_benchmarks_default_ids(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x y", "task_name": "arc"}\n\n{"text": "z", "task_name": "arc"}\n')
    pq = tmp_path / "b.parquet"
    pl.DataFrame({"text": ["q"], "task_name": ["hs"], "id": ["hs-001"]}).write_parquet(pq)
    items = prepare_benchmarks([jsonl, pq])
    assert items.columns == ["id", "task_name", "text"]
    assert items["id"].to_list() == ["arc/0", "arc/1", "hs-001"]
    with pytest.raises(CliError, match="duplicate benchmark item ids"):
        prepare_benchmarks([jsonl, jsonl])
