"""Benchmark items for decontamination, prepared once per dataset version.

Items come from local files and/or the Hugging Face Hub:

- a local `.jsonl` / `.parquet` file with columns `text`, `task_name` and an optional
  `id` (missing or null ids become "{task_name}/{i}", i = the record's 0-based index in
  its file, blank JSONL lines not counted);
- `hub:NAME`, NAME one of the eight benchmarks Cosmopedia decontaminated against (MMLU,
  HellaSwag, PIQA, SIQA, WinoGrande, OpenBookQA, ARC-Easy, ARC-Challenge), loaded with
  `datasets` at a pinned revision and cached as Parquet under resources/benchmarks/.

Cosmopedia's script read one Hub dataset of items (`text`, `task_name`) that it did not
publish the making of. Here an item's text is the question (with its context, if any)
followed by the gold answer, one space apart, as in resources/demo/benchmarks: the text a
model would have to have seen to learn the answer. Splits are the ones Cosmopedia
evaluated on (its lighteval tasks): MMLU and ARC test, the others validation. Item ids are
"{name}/{row index}" in the pinned split. The revisions are those pinned by the SmolLM3
evaluation tasks (huggingface/smollm); they cannot be checked from a machine without
Hub access, and `datasets` >= 4 no longer runs loading scripts: if a revision turns out
to hold only a script, pin the repository's Parquet conversion commit instead.

`cosmopedia benchmarks` merges the inputs into one Parquet sorted by id (duplicate ids
are an error) and can save the decontamination N-gram index beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cosmopedia import layout
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.io import read_parquet, require_columns, write_parquet
from cosmopedia.ngram_index import ITEM_SCHEMA, BenchmarkIndex

log = logging.getLogger("cosmopedia.benchmarks")

HUB_PREFIX = "hub:"


# ---------------------------------------------------------------- Hub benchmarks


def _join(*parts) -> str:
    return " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())


def _keyed_choice(choices: dict, key) -> str | None:
    labels = list(choices["label"])
    return choices["text"][labels.index(key)] if key in labels else None


def mmlu_text(row: dict) -> str:
    answer = row.get("answer")
    gold = row["choices"][answer] if isinstance(answer, int) and answer >= 0 else None
    return _join(row["question"], gold)


def hellaswag_text(row: dict) -> str:
    label = row.get("label")
    gold = row["endings"][int(label)] if label not in (None, "") else None
    context = row.get("ctx") or _join(row.get("ctx_a"), row.get("ctx_b"))
    return _join(context, gold)


def piqa_text(row: dict) -> str:
    label = int(row["label"]) if row.get("label") not in (None, "") else -1
    gold = {0: row["sol1"], 1: row["sol2"]}.get(label)
    return _join(row["goal"], gold)


def siqa_text(row: dict) -> str:
    label = str(row.get("label") or "")
    gold = {"1": row["answerA"], "2": row["answerB"], "3": row["answerC"]}.get(label)
    return _join(row["context"], row["question"], gold)


def winogrande_text(row: dict) -> str:
    option = {"1": row["option1"], "2": row["option2"]}.get(str(row.get("answer") or ""))
    return row["sentence"].replace("_", option) if option else row["sentence"]


def openbookqa_text(row: dict) -> str:
    return _join(row["question_stem"], _keyed_choice(row["choices"], row.get("answerKey")))


def arc_text(row: dict) -> str:
    return _join(row["question"], _keyed_choice(row["choices"], row.get("answerKey")))


@dataclass(frozen=True)
class HubBenchmark:
    name: str  # also the task_name of its items
    repo: str
    config: str | None
    split: str
    revision: str
    text: Callable[[dict], str]


_ARC_REVISION = "210d026faf9955653af8916fad021475a3f00453"
HUB = {
    b.name: b
    for b in (
        HubBenchmark(
            "mmlu",
            "cais/mmlu",
            "all",
            "test",
            "c30699e8356da336a370243923dbaf21066bb9fe",
            mmlu_text,
        ),
        HubBenchmark(
            "hellaswag",
            "Rowan/hellaswag",
            None,
            "validation",
            "6002345709e0801764318f06bf06ce1e7d1a1fe3",
            hellaswag_text,
        ),
        HubBenchmark(
            "piqa",
            "ybisk/piqa",
            "plain_text",
            "validation",
            "2e8ac2dffd59bac8c3c6714948f4c551a0848bb0",
            piqa_text,
        ),
        HubBenchmark(
            "siqa",
            "allenai/social_i_qa",
            None,
            "validation",
            "53620e5841fb12b08e082485797e7021d3684ea2",
            siqa_text,
        ),
        HubBenchmark(
            "winogrande",
            "allenai/winogrande",
            "winogrande_xl",
            "validation",
            "85ac5b5a3b7a930e22d590176e39460400d19e41",
            winogrande_text,
        ),
        HubBenchmark(
            "openbookqa",
            "allenai/openbookqa",
            "main",
            "validation",
            "388097ea7776314e93a529163e0fea805b8a6454",
            openbookqa_text,
        ),
        HubBenchmark("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test", _ARC_REVISION, arc_text),
        HubBenchmark(
            "arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test", _ARC_REVISION, arc_text
        ),
    )
}


def hub_benchmark_items(name: str, rows: Iterable[dict]) -> pl.DataFrame:
    """Items of a Hub benchmark from its rows (in split order): id, task_name, text."""
    bench = HUB[name]
    texts = [bench.text(dict(row)) for row in rows]
    return pl.DataFrame(
        {
            "id": [f"{name}/{i:05d}" for i in range(len(texts))],
            "task_name": [name] * len(texts),
            "text": texts,
        },
        schema=ITEM_SCHEMA,
    ).filter(pl.col("text") != "")


def download(name: str, output) -> pl.DataFrame:
    """Load a Hub benchmark at its pinned revision and cache its items as Parquet."""
    import datasets

    bench = HUB[name]
    log.info("loading %s (%s) %s@%s", bench.repo, bench.config, bench.split, bench.revision)
    rows = datasets.load_dataset(
        bench.repo, bench.config, split=bench.split, revision=bench.revision
    )
    items = hub_benchmark_items(name, rows)
    write_parquet(items, output)
    log.info("%s: %d items -> %s", name, items.height, output)
    return items


def hub_cache_path(name: str) -> str:
    return layout.cache_path("hub_benchmark", name=name, revision=HUB[name].revision)


def resolve_entries(entries: str | list[str]) -> list[str]:
    """Config entries -> the files the prepare step reads (hub:NAME -> its cache file)."""
    files = []
    for entry in [entries] if isinstance(entries, str) else entries:
        if entry.startswith(HUB_PREFIX):
            name = entry[len(HUB_PREFIX) :]
            if name not in HUB:
                raise CliError(f"unknown Hub benchmark {entry!r}; known: {sorted(HUB)}")
            files.append(hub_cache_path(name))
        else:
            files.append(entry)
    return files


# ---------------------------------------------------------------- local files


def _read_records(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return read_parquet(path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        # The seed reader: a bad line fails naming the file and line.
        from cosmopedia.ingest import read_records

        return pl.DataFrame(read_records(str(path)), infer_schema_length=None)
    raise CliError(f"{path}: benchmarks must be .jsonl or .parquet")


def read_items(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Benchmark items (id, task_name, text) of local files, sorted by id."""
    frames = []
    for path in map(Path, paths):
        if not path.exists():
            raise CliError(f"benchmark file {path} is missing")
        df = _read_records(path)
        require_columns(df, path, ("text", "task_name"))
        default = pl.col("task_name") + "/" + pl.int_range(pl.len()).cast(pl.String)
        ids = pl.col("id").cast(pl.String).fill_null(default) if "id" in df.columns else default
        frames.append(df.with_columns(id=ids).select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA))
    items = pl.concat(frames) if frames else pl.DataFrame(schema=ITEM_SCHEMA)
    dupes = items.filter(pl.col("id").is_duplicated())["id"].unique().sort().to_list()
    if dupes:
        raise CliError(f"duplicate benchmark item ids (give an `id` column): {dupes[:5]}")
    return items.sort("id")


def prepare(inputs: list[str], output, index_path=None, ngram: int | None = None) -> pl.DataFrame:
    """All items in one Parquet (+ the N-gram index for `ngram`, if `index_path`)."""
    items = read_items(inputs)
    write_parquet(items, output)
    if index_path is not None:
        BenchmarkIndex(items, ngram).save(index_path)
    counts = items.group_by("task_name").len().sort("task_name").iter_rows()
    log.info("%d items: %s", items.height, ", ".join(f"{t} {n}" for t, n in counts))
    return items


# ---------------------------------------------------------------- CLI


def add_arguments(name, parser):
    if name == "benchmarks":
        parser.add_argument("--inputs", required=True, nargs="+", help="items (.jsonl|.parquet)")
        parser.add_argument("--output", required=True, help="prepared items (.parquet)")
        parser.add_argument("--index", help="also save the N-gram index here (.npz)")
        parser.add_argument("--settings", default="{}", help="JSON: decontamination settings")
    elif name == "benchmarks-download":
        parser.add_argument("--name", required=True, choices=sorted(HUB))
        parser.add_argument("--revision", help="must be the pinned revision (a check)")
        parser.add_argument("--output", required=True, help="cached items (.parquet)")


def main(args) -> int:
    settings = step_settings.load(step_settings.Decontamination, args.settings)
    prepare(args.inputs, args.output, args.index, settings.ngram)
    return 0


def download_main(args) -> int:
    if args.revision and args.revision != HUB[args.name].revision:
        raise CliError(f"{args.name} is pinned at {HUB[args.name].revision}, not {args.revision}")
    download(args.name, args.output)
    return 0
