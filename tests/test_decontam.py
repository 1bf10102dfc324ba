"""Decontamination: N-gram candidates confirmed by difflib, as Cosmopedia, deterministically."""

from __future__ import annotations

import difflib
import json
import random
import re
import string
import unicodedata

import polars as pl
import pytest

from cosmopedia import cli, decontam
from cosmopedia.benchmarks import read_items
from cosmopedia.decontam import default_settings, find_contamination
from cosmopedia.errors import CliError
from cosmopedia.io import read_parquet, write_parquet
from cosmopedia.ngram_index import BenchmarkIndex, normalize, tokens

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


# ---------------------------------------------------------------- Cosmopedia's script, plainly


def reference_tokenize(text: str) -> list[str]:
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return re.findall(r"\w+", text.lower())


def reference_ratio(row: str, item: str) -> tuple[float, str]:
    matcher = difflib.SequenceMatcher(None, row.lower(), item.lower(), autojunk=False)
    parts = [row[a : a + k] for a, _, k in matcher.get_matching_blocks() if k > 5]
    match = " ".join("".join(parts).split())
    return (len(match) / len(item) if item else 0.0), match


def reference_flagged(texts: dict[str, str], items: list[dict], n: int = 10) -> dict:
    """{row id: {item id: ratio}} over every candidate, with the standard library only."""
    grams: dict[tuple, set[int]] = {}
    norms = []
    for pos, item in enumerate(items):
        toks = reference_tokenize(item["text"])
        norms.append(" ".join(toks))
        for gram in zip(*[toks[i:] for i in range(n)], strict=False):
            grams.setdefault(gram, set()).add(pos)
    out = {}
    for row_id, text in texts.items():
        toks = reference_tokenize(text)
        found = set()
        for gram in zip(*[toks[i:] for i in range(n)], strict=False):
            found |= grams.get(gram, set())
        row = " ".join(toks)
        if found:
            out[row_id] = {items[p]["id"]: reference_ratio(row, norms[p])[0] for p in found}
    return out


# ---------------------------------------------------------------- tests


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


def test_tokens_are_cosmopedias_on_any_text():
    rng = random.Random(3)
    pools = [(0, 0x250), (0x300, 0x370), (0x370, 0x400), (0x400, 0x500), (0x900, 0x980)]
    pools += [(0x1E00, 0x1F00), (0x2000, 0x2070), (0x3040, 0x3100), (0xAC00, 0xAC40)]
    special = ["İ", "ΟΔΟΣ ΣΑΣ", "e\u0301\u0323", "\U0001d165\U0001d16d", "K", "ß", "ﬁ", "²"]
    for _ in range(2000):
        text = "".join(
            rng.choice(special) if rng.random() < 0.2 else chr(rng.randrange(*rng.choice(pools)))
            for _ in range(rng.randint(0, 40))
        )
        assert tokens(text) == reference_tokenize(text), repr(text)


def test_flags_exactly_the_planted_contaminations_above_the_threshold():
    rng = random.Random(11)
    items = [
        {"id": f"t/{i:03d}", "task_name": "t", "text": words(rng.randint(12, 50), 100 + i)}
        for i in range(60)
    ]
    texts, planted = {}, {}
    for d in range(150):
        body = words(rng.randint(300, 600), 1000 + d)
        kind = rng.choice(["none"] * 6 + ["verbatim", "disguised", "edited", "fragment"])
        if kind != "none":
            item = rng.choice(items)["text"].split()
            if kind == "disguised":
                item = [w.upper() if rng.random() < 0.5 else w + "," for w in item]
            elif kind == "edited":
                for pos in rng.sample(range(10, len(item)), len(item) // 6):
                    item[pos] = rng.choice(VOCAB)
            elif kind == "fragment":
                start = rng.randrange(0, len(item) - 10)
                item = item[start : start + 10]
            cut = rng.randrange(len(body))
            body = f"{body[:cut]} {' '.join(item)} {body[cut:]}"
        texts[f"doc/{d:03d}"], planted[f"doc/{d:03d}"] = body, kind
    reference = reference_flagged(texts, items)
    every = find_contamination(texts, items, default_settings(report_all_matches=True))
    pairs = {
        (row, item): ratio for row, ratios in reference.items() for item, ratio in ratios.items()
    }
    assert {(m.row_id, m.item_id): m.ratio for m in every} == pairs
    flagged = {m.row_id for m in every if m.confirmed}
    assert flagged == {row for row, ratios in reference.items() if max(ratios.values()) > 0.5}
    # By default a row's checking stops at its first confirmed candidate: the same rows go,
    # and every candidate checked has the reference's ratio.
    checked = find_contamination(texts, items)
    assert {(m.row_id, m.item_id): m.ratio for m in checked}.items() <= pairs.items()
    assert {m.row_id for m in checked if m.confirmed} == flagged
    for row, ms in by_row(checked).items():
        assert [m.confirmed for m in ms] == [False] * (len(ms) - 1) + [ms[-1].confirmed], row
    assert {d for d, k in planted.items() if k in ("verbatim", "disguised")} <= flagged
    assert {d for d, k in planted.items() if k == "none"}.isdisjoint(flagged)
    assert any(k == "fragment" and d not in flagged for d, k in planted.items())


def test_diff_ratio_is_difflibs_with_and_without_the_verbatim_shortcut():
    rng = random.Random(5)
    for i in range(60):
        item = normalize(words(rng.randint(5, 40), 300 + i))
        row = normalize(words(rng.randint(50, 200), 400 + i))
        if i % 3 == 0:
            cut = rng.randrange(len(row))
            row = f"{row[:cut]} {item} {row[cut:]}"
        assert decontam.diff_ratio(row, item, 5) == reference_ratio(row, item)


@pytest.mark.parametrize("search", ["common substrings", "difflib's scans"])
def test_long_matching_blocks_are_difflibs_long_blocks(search, monkeypatch):
    """Both ways find exactly difflib's blocks above min_size (small alphabets make many
    equal-length ties, which difflib breaks by position; a large alphabet, more than 64
    bits for min_size + 1 characters, and min_size < 2 take difflib's scans)."""
    if search == "difflib's scans":
        monkeypatch.setattr(decontam, "_MIN_SEED", 10**6)
    rng = random.Random(9)
    wide = [chr(0x4E00 + i) for i in range(1100)]  # 1,100 distinct: 11 bits, 6 x 11 > 64
    for case in range(3000):
        alphabet = rng.choice(["ab", "abc ", "abcdefgh ", "the of a cat dog ", "aé ü ß", wide])
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 300)))
        b = "".join(rng.choices(alphabet, k=rng.randint(0, 80)))
        if a and rng.random() < 0.5:
            start = rng.randrange(len(a))
            b = b[:10] + a[start : start + rng.randint(5, 40)] + b[10:]
        if case % 50 == 0:
            a = "".join(rng.choices(wide, k=400))  # the whole wide alphabet in one string
            b = a[100:160] + "".join(rng.choices(wide, k=50))
        size = rng.randint(0, 8)
        blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
        want = [tuple(block) for block in blocks if block.size > size]
        assert decontam.long_matching_blocks(a, b, size) == want, (a, b, size)


def test_threshold_and_ngram_settings():
    [m] = find_contamination({"r": TEXTS["verbatim"]}, ITEMS, default_settings(threshold=1.0))
    assert not m.confirmed  # ratio must be strictly greater
    # A 9-token overlap is not a candidate at N=10 but is at N=5.
    nine = " ".join(ITEMS[2]["text"].split()[:9])
    assert find_contamination({"r": f"{words(30, 8)} {nine}"}, ITEMS) == []
    assert find_contamination({"r": f"{words(30, 8)} {nine}"}, ITEMS, default_settings(ngram=5))
    # Windows never join two rows (they are looked up together).
    half = ITEMS[2]["text"].split()
    texts = {"a": f"{words(20, 9)} {' '.join(half[:5])}", "b": f"{' '.join(half[5:12])} x"}
    assert find_contamination(texts, ITEMS) == []
    with pytest.raises(CliError, match="n_gram"):
        default_settings(n_gram=10)


def test_index_saved_and_loaded_is_the_same(tmp_path):
    items = read_items_frame(ITEMS)
    built = BenchmarkIndex(items, 10)
    built.save(tmp_path / "idx")
    first = (tmp_path / "idx").read_bytes()
    loaded = BenchmarkIndex.load(items, tmp_path / "idx", 10)
    for name in BenchmarkIndex.ARRAYS:
        assert getattr(loaded, name).tolist() == getattr(built, name).tolist()
    assert loaded.blob == built.blob and loaded.ids == built.ids
    assert find_contamination(TEXTS, None, index=loaded) == find_contamination(TEXTS, ITEMS)
    BenchmarkIndex(items, 10).save(tmp_path / "idx")
    assert (tmp_path / "idx").read_bytes() == first
    with pytest.raises(CliError, match="other items or another ngram"):
        BenchmarkIndex.load(items, tmp_path / "idx", 8)
    with pytest.raises(CliError, match="other items"):
        BenchmarkIndex.load(items.head(2), tmp_path / "idx", 10)


def read_items_frame(records) -> pl.DataFrame:
    return decontam.items_frame(records)


def run_cli(tmp_path, rows: pl.DataFrame, items: list[dict], settings='{"ngram": 10}'):
    tmp_path.mkdir(exist_ok=True)
    bench = tmp_path / "items.jsonl"
    bench.write_text("".join(json.dumps(i) + "\n" for i in items))
    write_parquet(rows, tmp_path / "in.parquet")
    prepared, index = tmp_path / "items.parquet", tmp_path / "items.ngrams"
    argv = ["benchmarks", "--inputs", str(bench), "--output", str(prepared)]
    assert cli.main([*argv, "--index", str(index), "--settings", settings]) == 0
    argv = ["decontaminate", "--input", str(tmp_path / "in.parquet"), "--benchmarks"]
    argv += [str(prepared), "--index", str(index), "--output", str(tmp_path / "kept.parquet")]
    assert cli.main([*argv, "--report", str(tmp_path / "rep.parquet"), "--settings", settings]) == 0
    argv = ["decontam-summary", "--reports", str(tmp_path / "rep.parquet"), "--benchmarks"]
    assert cli.main([*argv, str(prepared), "--output", str(tmp_path / "summary.tsv")]) == 0
    names = ("items.parquet", "items.ngrams", "kept.parquet", "rep.parquet", "summary.tsv")
    return {name: (tmp_path / name).read_bytes() for name in names}


def test_checking_stops_at_the_first_confirmed_candidate_likeliest_first():
    """The likeliest candidate (largest share of its N-grams in the row) is checked first;
    an unconfirmed one before the confirmed one stays in the report, those after are not
    checked. report_all_matches checks them all and removes the same rows."""
    long_item = words(40, 21).split()
    short_item = words(20, 22).split()
    fragment = words(60, 23).split()  # shares one N-gram with the row
    edited = long_item[:]
    edited[10], edited[25] = "zzzzzz", "qqqqqq"  # 20 of its 31 N-grams lost
    items = [
        {"id": "t/1-edited", "task_name": "t", "text": " ".join(long_item)},
        {"id": "t/2-short", "task_name": "t", "text": " ".join(short_item)},
        {"id": "t/0-fragment", "task_name": "t", "text": " ".join(fragment)},
    ]
    row = " ".join(
        [words(50, 24), " ".join(fragment[30:40]), words(50, 25), " ".join(short_item[:14])]
        + [words(50, 26), " ".join(edited), words(50, 27)]
    )
    every = find_contamination({"r": row}, items, default_settings(report_all_matches=True))
    ratio = {m.item_id: m.ratio for m in every}
    assert ratio["t/1-edited"] > 0.85 > ratio["t/2-short"] > 0.5 > ratio["t/0-fragment"]
    settings = default_settings(threshold=0.85)
    checked = find_contamination({"r": row}, items, settings)
    # Shares: short 5/11, edited 11/31, fragment 1/51.
    assert [(m.item_id, m.confirmed) for m in checked] == [
        ("t/2-short", False),
        ("t/1-edited", True),
    ]
    assert [m.ratio for m in checked] == [ratio["t/2-short"], ratio["t/1-edited"]]
    all_settings = default_settings(threshold=0.85, report_all_matches=True)
    assert len(find_contamination({"r": row}, items, all_settings)) == 3
    df = pl.DataFrame({"id": ["r", "s"], "text": [row, words(80, 28)]})
    index = BenchmarkIndex(read_items_frame(items), 10)
    kept, report = decontam.decontaminate(df, index, settings)
    kept_all, report_all = decontam.decontaminate(df, index, all_settings)
    assert kept["id"].to_list() == kept_all["id"].to_list() == ["s"]
    assert report.filter("best")["item_id"].to_list() == ["t/1-edited"]
    assert report["removed"].all() and report_all["removed"].all()
    assert report_all.height == 3


@pytest.mark.parametrize("every", [False, True], ids=["first-confirmed", "all-matches"])
def test_best_match_wins_ties_by_item_id_and_reruns_are_byte_identical(tmp_path, every):
    items = [
        {"id": "b", "task_name": "t", "text": QUESTION},
        {"id": "a", "task_name": "t", "text": QUESTION},
        {"id": "c", "task_name": "u", "text": ITEMS[1]["text"]},
        {"id": "d", "task_name": "v", "text": words(30, 12)},
    ]
    rows = pl.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "text": [TEXTS["verbatim"] + " " + ITEMS[1]["text"], TEXTS["unrelated"], "x"],
            "extra": [1, 2, 3],
        }
    )
    settings = json.dumps({"ngram": 10, "report_all_matches": every})
    first = run_cli(tmp_path, rows, items, settings)
    kept = read_parquet(tmp_path / "kept.parquet")
    assert kept.equals(rows.filter(pl.col("id") != "r1"))
    report = read_parquet(tmp_path / "rep.parquet")
    assert report.columns == list(decontam.REPORT_SCHEMA)
    # a, b and c are all in r1 verbatim (share 1, ratio 1): a, the first by id, is checked
    # first and confirmed; only with report_all_matches are b and c checked too.
    checked = ["a", "b", "c"] if every else ["a"]
    assert report["item_id"].to_list() == checked
    assert report["best"].to_list() == [True] + [False] * (len(checked) - 1)
    assert report["confirmed"].all()
    assert report["removed"].all()
    summary = pl.read_csv(tmp_path / "summary.tsv", separator="\t")
    assert summary.columns == list(decontam.SUMMARY_SCHEMA)
    assert summary.select("task_name", "items", "candidates_checked", "rows_removed").rows() == [
        ("t", 2, 2 if every else 1, 1),
        ("u", 1, 1 if every else 0, 0),
        ("v", 1, 0, 0),
    ]
    assert summary["matched_item_ids"].fill_null("").to_list() == ["a", "", ""]
    assert run_cli(tmp_path / "again", rows, items, settings) == first


def test_summary_of_no_report_lists_every_benchmark():
    items = read_items_frame(ITEMS)
    summary = decontam.summarize([], items)
    assert summary["task_name"].to_list() == ["gsm8k", "mmlu"]
    assert summary["candidates_checked"].to_list() == [0, 0]
    assert summary["items"].to_list() == [1, 2]


def test_cli_builds_the_index_when_none_is_given(tmp_path):
    bench = tmp_path / "items.jsonl"
    bench.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    rows = pl.DataFrame({"id": list(TEXTS), "text": list(TEXTS.values())})
    write_parquet(rows, tmp_path / "in.parquet")
    argv = ["decontaminate", "--input", str(tmp_path / "in.parquet"), "--benchmarks", str(bench)]
    argv += ["--output", str(tmp_path / "k.parquet"), "--report", str(tmp_path / "r.parquet")]
    assert cli.main([*argv, "--settings", "{}"]) == 0
    assert read_parquet(tmp_path / "k.parquet")["id"].to_list() == ["one-ngram", "unrelated"]
    assert read_items([bench])["id"].to_list() == ["gsm8k/0", "mmlu/3", "mmlu/9"]
