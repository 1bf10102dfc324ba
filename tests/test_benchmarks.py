"""Benchmark items: Hub rows -> question + gold answer text, local files, one prepared file.

The Hub cannot be reached here: download() runs with `datasets.load_dataset` replaced by
rows shaped like each benchmark's (field names and types of the real datasets).
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from cosmopedia import benchmarks, cli
from cosmopedia.decontam import default_settings, find_contamination
from cosmopedia.errors import CliError
from cosmopedia.io import read_parquet
from cosmopedia.ngram_index import BenchmarkIndex

ROWS = {
    "mmlu": [
        {
            "question": "Which gas do plants absorb from the air for photosynthesis?",
            "subject": "high_school_biology",
            "choices": ["Oxygen", "Carbon dioxide", "Nitrogen", "Helium"],
            "answer": 1,
        }
    ],
    "hellaswag": [
        {
            "ind": 24,
            "activity_label": "Roof shingle removal",
            "ctx_a": "A man is sitting on a roof.",
            "ctx_b": "he",
            "ctx": "A man is sitting on a roof. he",
            "endings": ["is using wrap.", "is ripping level tiles off.", "is holding a cube.", "x"],
            "source_id": "activitynet~v_-JhWjGDPHMY",
            "split": "val",
            "split_type": "indomain",
            "label": "1",
        }
    ],
    "piqa": [
        {
            "goal": "How do I ready a guinea pig cage?",
            "sol1": "Use paper.",
            "sol2": "Use jeans.",
            "label": 0,
        }
    ],  # noqa: E501
    "siqa": [
        {
            "context": "Tracy didn't go home that evening.",
            "question": "What does Tracy need to do before this?",
            "answerA": "make a new plan",
            "answerB": "Go home and see Riley",
            "answerC": "Find somewhere to go",
            "label": "3",
        }
    ],
    "winogrande": [
        {
            "sentence": "Sarah was a better surgeon than Maria so _ always got the harder cases.",
            "option1": "Sarah",
            "option2": "Maria",
            "answer": "1",
        }
    ],
    "openbookqa": [
        {
            "id": "7-980",
            "question_stem": "The sun is responsible for",
            "choices": {
                "text": ["puppies learning", "plants sprouting", "rocks", "cars"],
                "label": ["A", "B", "C", "D"],
            },
            "answerKey": "B",
        }
    ],
    "arc_easy": [
        {
            "id": "Mercury_7175875",
            "question": "Which unit measures the mass of a paper clip?",
            "choices": {"text": ["gram", "kilogram", "liter"], "label": ["1", "2", "3"]},
            "answerKey": "1",
        }
    ],
    "arc_challenge": [
        {
            "id": "Mercury_SC_415702",
            "question": "George wants to warm his hands quickly. Which skin surface works best?",
            "choices": {"text": ["dry palms", "wet palms"], "label": ["A", "B"]},
            "answerKey": "A",
        }
    ],
}
EXPECTED = {
    "mmlu": "Which gas do plants absorb from the air for photosynthesis? Carbon dioxide",
    "hellaswag": "A man is sitting on a roof. he is ripping level tiles off.",
    "piqa": "How do I ready a guinea pig cage? Use paper.",
    "siqa": "Tracy didn't go home that evening. What does Tracy need to do before this? "
    "Find somewhere to go",
    "winogrande": "Sarah was a better surgeon than Maria so Sarah always got the harder cases.",
    "openbookqa": "The sun is responsible for plants sprouting",
    "arc_easy": "Which unit measures the mass of a paper clip? gram",
    "arc_challenge": "George wants to warm his hands quickly. Which skin surface works best? "
    "dry palms",
}


def test_the_eight_benchmarks_are_pinned():
    assert sorted(benchmarks.HUB) == sorted(EXPECTED)
    for bench in benchmarks.HUB.values():
        assert len(bench.revision) == 40 and int(bench.revision, 16) >= 0


@pytest.mark.parametrize("name", sorted(ROWS))
def test_hub_rows_become_question_and_gold_answer(name):
    items = benchmarks.hub_benchmark_items(name, ROWS[name] * 2)
    assert items.columns == ["id", "task_name", "text"]
    assert items["id"].to_list() == [f"{name}/00000", f"{name}/00001"]
    assert items["task_name"].to_list() == [name, name]
    assert items["text"].to_list() == [EXPECTED[name]] * 2


def test_rows_without_a_gold_label_keep_the_question():
    row = dict(ROWS["hellaswag"][0], label="")
    assert benchmarks.hellaswag_text(row) == "A man is sitting on a roof. he"
    assert benchmarks.piqa_text(dict(ROWS["piqa"][0], label=-1)) == ROWS["piqa"][0]["goal"]
    assert benchmarks.winogrande_text(dict(ROWS["winogrande"][0], answer="")).count("_") == 1


def test_download_loads_the_pinned_revision(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(repo, config=None, split=None, revision=None, **kwargs):
        calls.append((repo, config, split, revision))
        return ROWS["arc_challenge"]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / benchmarks.hub_cache_path("arc_challenge")
    argv = ["benchmarks-download", "--name", "arc_challenge", "--output", str(out)]
    assert cli.main([*argv, "--revision", benchmarks.HUB["arc_challenge"].revision]) == 0
    bench = benchmarks.HUB["arc_challenge"]
    assert calls == [(bench.repo, bench.config, bench.split, bench.revision)]
    assert read_parquet(out)["text"].to_list() == [EXPECTED["arc_challenge"]]
    assert cli.main([*argv, "--revision", "0" * 40]) == 2


def test_entries_resolve_to_local_files_and_hub_caches():
    files = benchmarks.resolve_entries(["hub:mmlu", "resources/x.jsonl"])
    assert files == [f"resources/benchmarks/mmlu/{benchmarks.HUB['mmlu'].revision}.parquet",
                     "resources/x.jsonl"]  # fmt: skip
    assert benchmarks.resolve_entries("a.parquet") == ["a.parquet"]
    with pytest.raises(CliError, match="unknown Hub benchmark 'hub:gsm8k'"):
        benchmarks.resolve_entries("hub:gsm8k")


def test_prepare_merges_local_and_hub_items_with_the_index(tmp_path):
    local = tmp_path / "local.jsonl"
    local.write_text(
        json.dumps({"text": "Which planet is known as the red planet? Mars", "task_name": "x"})
        + "\n\n"
        + json.dumps({"text": "What is two plus two? Four", "task_name": "x", "id": "x-7"})
        + "\n"
    )
    hub = tmp_path / "mmlu.parquet"
    benchmarks.hub_benchmark_items("mmlu", ROWS["mmlu"]).write_parquet(hub)
    out, index = tmp_path / "items.parquet", tmp_path / "items.ngrams"
    argv = ["benchmarks", "--inputs", str(local), str(hub), "--output", str(out)]
    assert cli.main([*argv, "--index", str(index), "--settings", '{"ngram": 5}']) == 0
    items = read_parquet(out)
    assert items["id"].to_list() == ["mmlu/00000", "x-7", "x/0"]
    loaded = BenchmarkIndex.load(items, index, 5)
    row = {"r": f"Notes. {EXPECTED['mmlu'].upper()}! More notes."}
    [match] = find_contamination(row, None, default_settings(ngram=5), index=loaded)
    assert match.item_id == "mmlu/00000" and match.confirmed


def test_local_items_are_checked(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x y", "task_name": "arc"}\n\n{"text": "z", "task_name": "arc"}\n')
    pq = tmp_path / "b.parquet"
    pl.DataFrame({"text": ["q"], "task_name": ["hs"], "id": ["hs-001"]}).write_parquet(pq)
    items = benchmarks.read_items([jsonl, pq])
    assert items.columns == ["id", "task_name", "text"]
    assert items["id"].to_list() == ["arc/0", "arc/1", "hs-001"]
    with pytest.raises(CliError, match="duplicate benchmark item ids"):
        benchmarks.read_items([jsonl, jsonl])
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(CliError, match="missing column 'task_name'"):
        benchmarks.read_items([tmp_path / "c.jsonl"])
    with pytest.raises(CliError, match="is missing"):
        benchmarks.read_items([tmp_path / "nope.jsonl"])


def test_a_malformed_benchmark_line_is_named(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"text": "q? a", "task_name": "t"}\n\n{"text": oops}\n')
    with pytest.raises(CliError, match=r"items.jsonl:3: malformed JSON"):
        benchmarks.read_items([path])
