"""Row-range shards: a seed file split into several shards (sources.<name>.rows_per_shard or
prompts_per_shard), planned offline, each ingest job reading only its rows, row ids the
same whatever the split."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, make_workdir, run_snakemake
from cosmopedia import hub, plan, rowranges
from cosmopedia.errors import PlanError
from cosmopedia.io import read_parquet_metadata
from cosmopedia.settings import validate_config
from test_ingest import WEB, run_ingest, write_lines


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def local_config(tmp_path, files: str, **source) -> dict:
    return validate_config(
        {
            "dataset": {"name": "r", "version": "v1"},
            "sources": {"web": {"family": "web_samples", "files": files, **source}},
        }
    )


def plan_in(tmp_path, config, monkeypatch):
    """plan_shards with the templates of the repository and a cache in tmp_path."""
    monkeypatch.chdir(REPO)
    return plan.plan_shards(config, cache_path=str(tmp_path / "cache.json"))


def write_parquet_rows(path, n: int, row_group_size: int = 10_000) -> str:
    texts = [f"extract number {i}" for i in range(n)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=row_group_size)
    return str(path)


# --- planning ------------------------------------------------------------------------------


def test_split_and_names():
    assert rowranges.split(100_000, 25_000) == [
        (0, 25_000), (25_000, 50_000), (50_000, 75_000), (75_000, 100_000),
    ]  # fmt: skip
    assert rowranges.split(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert rowranges.split(0, 4) == []
    assert rowranges.range_name("train-00000-of-00009", 0, 25_000) == (
        "train-00000-of-00009_r000000-024999"
    )


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_a_file_of_100k_rows_with_25000_rows_per_shard_is_4_shards(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"train-00000-of-00009.{suffix}"
    if suffix == "parquet":
        write_parquet_rows(path, 100_000)
    else:
        path.write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(100_000)))
    config = local_config(tmp_path, str(tmp_path / f"*.{suffix}"), rows_per_shard=25_000)
    shards = plan_in(tmp_path, config, monkeypatch)
    assert [s.name for s in shards] == [
        "train-00000-of-00009_r000000-024999",
        "train-00000-of-00009_r025000-049999",
        "train-00000-of-00009_r050000-074999",
        "train-00000-of-00009_r075000-099999",
    ]
    assert [s.rows for s in shards] == rowranges.split(100_000, 25_000)
    assert {s.file_shard for s in shards} == {"train-00000-of-00009"}
    assert {s.file_rows for s in shards} == {100_000}
    assert len({s.rows_sha256 for s in shards}) == 4
    # Counted once, then taken from the cache (by size and mtime).
    cache = json.loads((tmp_path / "cache.json").read_text())
    assert cache[str(path)]["rows"] == 100_000
    assert plan.planned_prompts(config, cache_path=str(tmp_path / "cache.json")) == {
        f"web/{s.name}": 25_000 for s in shards
    }


def test_parquet_rows_come_from_the_footer_only(tmp_path, monkeypatch):
    """Planning a Parquet file reads its footer for the row count: a file whose data pages
    are garbage still plans (its range digests read the stored bytes, never decode them)."""
    path = tmp_path / "a.parquet"
    write_parquet_rows(path, 30, row_group_size=10)
    assert rowranges.count_rows(str(path)) == 30
    calls = []
    monkeypatch.setattr(pl, "read_parquet", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: calls.append(a))
    config = local_config(tmp_path, str(tmp_path / "*.parquet"), rows_per_shard=10)
    assert len(plan_in(tmp_path, config, monkeypatch)) == 3
    assert calls == []


def test_prompts_per_shard_divides_by_the_fan_out(tmp_path, monkeypatch):
    path = tmp_path / "w.jsonl"
    path.write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(50)))
    files = str(tmp_path / "*.jsonl")
    styles = ["textbook_academic", "textbook_narrative", "blogpost", "wikihow"]
    # fan_out all: 4 prompts per row -> 10 rows per shard for 40 prompts.
    config = local_config(tmp_path, files, fan_out="all", styles=styles, prompts_per_shard=40)
    assert plan.prompts_per_row(config, "web") == 4
    assert plan.rows_per_shard(config, "web") == 10
    shards = plan_in(tmp_path, config, monkeypatch)
    assert [s.rows for s in shards] == rowranges.split(50, 10)
    planned = plan.planned_prompts(config, cache_path=str(tmp_path / "cache.json"))
    assert set(planned.values()) == {40}
    # fan_out one: one prompt per row -> 40 rows per shard.
    config = local_config(tmp_path, files, styles=styles, prompts_per_shard=40)
    assert [s.rows for s in plan_in(tmp_path, config, monkeypatch)] == [(0, 40), (40, 50)]
    # Never fewer than one row per shard; not both keys.
    config = local_config(tmp_path, files, fan_out="all", styles=styles, prompts_per_shard=3)
    assert plan.rows_per_shard(config, "web") == 1
    config = local_config(tmp_path, files, rows_per_shard=5, prompts_per_shard=40)
    with pytest.raises(PlanError, match="sources.web: give rows_per_shard or prompts_per_shard"):
        plan_in(tmp_path, config, monkeypatch)


def test_openstax_books_are_rows_but_their_prompts_are_unknown(monkeypatch):
    config = yaml.safe_load((REPO / "config" / "cosmopedia.yaml").read_text())
    openstax = config["sources"]["openstax"]
    openstax["hub"]["row_counts"] = {"openstax_books.jsonl": 77}
    config["sources"] = {"openstax": openstax}
    monkeypatch.chdir(REPO)
    assert plan.prompts_per_row(validate_config(config), "openstax") is None
    openstax["rows_per_shard"] = 20  # books per shard
    shards = plan.plan_shards(validate_config(config))
    assert [s.name for s in shards] == [
        "openstax_books_r000000-000019", "openstax_books_r000020-000039",
        "openstax_books_r000040-000059", "openstax_books_r000060-000076",
    ]  # fmt: skip
    assert set(plan.planned_prompts(validate_config(config)).values()) == {None}
    del openstax["rows_per_shard"]
    openstax["prompts_per_shard"] = 25_000
    with pytest.raises(
        PlanError, match=r"openstax.prompts_per_shard: a row of family openstax is a book"
    ):
        plan.plan_shards(validate_config(config))


def hub_source(**extra) -> dict:
    return {
        "family": "stories",
        "fan_out": "all",
        "hub": {
            "repo_id": "HuggingFaceTB/ultrachat_questions_about_world",
            "revision": "a55d8ffe1775f6489df71e5755e64edc831641ed",
            "data_files": [f"data/train-0000{i}-of-00009.parquet" for i in range(3)],
            **extra,
        },
        "columns": {"text": "first_turn"},
    }


def test_hub_files_split_only_with_recorded_row_counts(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = demo_config()
    config["sources"] = {"chat": hub_source() | {"prompts_per_shard": 25_000}}
    with pytest.raises(PlanError) as info:
        plan.plan_shards(validate_config(config))
    message = str(info.value)
    assert "sources.chat.hub.row_counts has none for data/train-00000-of-00009.parquet" in message
    assert "cosmopedia lock --configfile FILE" in message
    # Not split: planning needs no count, the forecast says "unknown".
    config["sources"] = {"chat": hub_source()}
    monkeypatch.chdir(REPO)
    planned = plan.planned_prompts(validate_config(config))
    assert planned == dict.fromkeys(
        (f"chat/train-0000{i}-of-00009" for i in range(3)), None
    )  # fmt: skip
    counts = {f"data/train-0000{i}-of-00009.parquet": 64_202 for i in range(3)}
    config["sources"] = {"chat": hub_source(row_counts=counts)}
    assert set(plan.planned_prompts(validate_config(config)).values()) == {64_202 * 5}
    # 5 styles per question: 25,000 prompts -> 5,000 questions per shard.
    config["sources"] = {"chat": hub_source(row_counts=counts) | {"prompts_per_shard": 25_000}}
    shards = plan.plan_shards(validate_config(config))
    assert len(shards) == 3 * 13
    assert shards[0].name == "train-00000-of-00009_r000000-004999"
    assert shards[12].name == "train-00000-of-00009_r060000-064201"
    assert all(s.is_hub and s.rows_sha256 is None for s in shards)
    planned = plan.planned_prompts(validate_config(config))
    assert planned["chat/train-00000-of-00009_r000000-004999"] == 25_000
    assert planned["chat/train-00000-of-00009_r060000-064201"] == 4_202 * 5
    assert sum(planned.values()) == 3 * 64_202 * 5


def test_demo_plan_is_unchanged_without_the_keys(monkeypatch):
    monkeypatch.chdir(REPO)
    shards = plan.plan_shards(validate_config(demo_config()))
    assert all(s.rows is None and s.stem is None for s in shards)
    assert "rows_per_shard" not in validate_config(demo_config())["sources"]["web"]


# --- ingest of a range ---------------------------------------------------------------------


def ingest_range(tmp_path, path, shard, start, stop, **extra):
    settings = WEB | {"row_start": start, "row_stop": stop, "file_shard": "a"} | extra
    code, out, _ = run_ingest(tmp_path, path, settings, shard=shard)
    assert code == 0
    return pl.read_parquet(out)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_ranges_keep_the_ids_of_the_whole_file(tmp_path, suffix):
    n = 23
    path = tmp_path / f"a.{suffix}"
    if suffix == "jsonl":  # blank lines are not rows
        lines = [json.dumps({"text": f"row {i}"}).encode() for i in range(n)]
        write_lines(path, lines[:5] + [b"", b"  "] + lines[5:])
    else:
        write_parquet_rows(path, n, row_group_size=4)
    code, out, _ = run_ingest(tmp_path / "whole", path, WEB, shard="a")
    whole = pl.read_parquet(out)
    assert whole["id"].to_list() == [f"web/a/{i:07d}" for i in range(n)]
    parts = [
        ingest_range(
            tmp_path / str(start), path, rowranges.range_name("a", start, stop), start, stop
        )
        for start, stop in rowranges.split(n, 10)
    ]
    assert pl.concat(parts).equals(whole)
    assert parts[1]["id"].to_list() == [f"web/a/{i:07d}" for i in range(10, 20)]


def test_a_range_records_its_rows_and_file(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [b'{"text": "x%d"}' % i for i in range(6)])
    ingest_range(tmp_path, path, "a_r000002-000003", 2, 4)
    record = read_parquet_metadata(tmp_path / "out" / "a_r000002-000003.parquet")["ingest"]
    assert record["row_range"] == [2, 4] and record["file_shard"] == "a"
    assert (record["rows_read"], record["rows_kept"]) == (2, 2)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_editing_one_row_changes_only_its_ranges_digest(tmp_path, suffix):
    path = str(tmp_path / f"a.{suffix}")

    def write(texts):
        if suffix == "jsonl":
            write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}).encode() for t in texts])
        else:
            pq.write_table(pa.table({"text": texts}), path, row_group_size=5)

    texts = [f"row {i}" for i in range(20)]
    write(texts)
    rows, before = rowranges.scan(path, 5)
    assert rows == 20 and len(set(before)) == 4
    assert [rowranges.range_digest(path, s, e) for s, e in rowranges.split(20, 5)] == before
    texts[12] = "an edited row"
    write(texts)
    _, after = rowranges.scan(path, 5)
    assert [a == b for a, b in zip(before, after, strict=True)] == [True, True, False, True]


def test_ingest_refuses_a_range_changed_since_planning_and_rows_past_the_last(tmp_path, capsys):
    path = write_lines(tmp_path / "a.jsonl", [b'{"text": "x%d"}' % i for i in range(6)])
    _, digests = rowranges.scan(path, 3)
    last = {"rows_sha256": digests[1], "file_rows": 6}
    ingest_range(tmp_path / "ok", path, "a_r000003-000005", 3, 6, **last)
    with open(path, "ab") as f:
        f.write(b'{"text": "appended"}\n')
    settings = WEB | {"row_start": 3, "row_stop": 6, "file_shard": "a"} | last
    code, out, _ = run_ingest(tmp_path / "more", path, settings, shard="a_r000003-000005")
    assert code == 2 and not out.exists()
    assert "more rows than the 6 planned" in capsys.readouterr().err
    write_lines(tmp_path / "a.jsonl", [b'{"text": "x%d"}' % i for i in range(5)] + [b'{"text": 1}'])
    code, out, _ = run_ingest(tmp_path / "edit", path, settings, shard="a_r000003-000005")
    assert code == 2 and not out.exists()
    assert "rows 3-5 changed after the workflow was planned" in capsys.readouterr().err


def test_hub_range_streams_only_its_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "local" / "repo" / "data").mkdir(parents=True)
    file = "data/train-00000-of-00001.parquet"
    write_parquet_rows(tmp_path / "local" / "repo" / file, 25, row_group_size=4)
    monkeypatch.chdir(tmp_path)
    spec = {"repo_id": "local/repo", "revision": "main", "split": "train"}
    ref = hub.shard_ref(spec["repo_id"], spec["revision"], file)
    rows = list(hub.iter_rows("web", "local/repo", "main", file, start=10, stop=20))
    assert [r["text"] for r in rows] == [f"extract number {i}" for i in range(10, 20)]
    settings = WEB | {"hub": spec, "file_shard": "train-00000-of-00001"}
    df = ingest_range(tmp_path / "a", ref, "r1", 20, 25, **settings, file_rows=25)
    assert df["id"].to_list() == [f"web/train-00000-of-00001/{i:07d}" for i in range(20, 25)]
    # A recorded count below the file's rows: the last range says so (rows would be lost).
    code, out, _ = run_ingest(
        tmp_path / "b", ref, settings | {"row_start": 20, "row_stop": 24, "file_rows": 24}, "r2"
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "more rows than the 24 planned" in err and "hub.row_counts is wrong" in err
    # Above it: a range past the end finds too few rows.
    code, _, _ = run_ingest(
        tmp_path / "c", ref, settings | {"row_start": 20, "row_stop": 30, "file_rows": 30}, "r3"
    )
    assert code == 2
    assert "rows 20-29 planned, but the file has only 25 rows" in capsys.readouterr().err


# --- the workflow ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_split_demo_releases_the_same_rows(demo_run, tmp_path):
    """The demo with its stories and web seeds split into row ranges releases exactly the
    rows of the unsplit demo: same ids, same prompts and seeds, same texts."""
    workdir = make_workdir(tmp_path / "split")
    config = demo_config()
    config["sources"]["stories"]["rows_per_shard"] = 12
    config["sources"]["web"]["prompts_per_shard"] = 15
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--cores", "2")
    root = "results/cosmopedia-demo/v0.1/dataset"
    split_files = sorted((workdir / root / "data").glob("*/*/*.parquet"))
    names = {p.stem for p in split_files}
    assert "stories-00000_r000012-000023" in names and "web-00001_r000015-000029" in names
    assert "outline-00000" in names  # not split

    def rows(folder):
        frames = [
            pl.read_parquet(p) for p in sorted((folder / root / "data").glob("*/*/*.parquet"))
        ]
        return pl.concat(frames).sort("id")

    assert rows(workdir).equals(rows(demo_run))
    manifest = json.loads((workdir / root / "manifest.json").read_text())
    stage_rows = manifest["stage_rows"]["by_shard"]
    assert stage_rows["stories/stories-00000_r000012-000023"]["read"] == 12
