import json

import polars as pl
import pytest

from conftest import INGEST_DEFAULTS, ingest_settings
from cosmopedia import ingest
from cosmopedia.errors import CliError
from cosmopedia.ingest import read_records


def ingest_records(records, path, source, shard, settings: dict):
    return ingest.ingest_records(records, path, source, shard, ingest_settings(settings))


WEB = {"source": "web", "family": "web_samples", "columns": {}, "id_column": None}


def write_lines(path, lines):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_ids_are_stable_and_in_file_order(tmp_path):
    rows = [{"text": f"row {i}", "topic": None} for i in range(12)]
    path = write_lines(tmp_path / "a.jsonl", [json.dumps(r).encode() for r in rows])
    df = ingest_records(read_records(path), path, "web", "a", WEB)
    assert df["id"].to_list() == [f"web/a/{i:07d}" for i in range(12)]
    assert df["id"].to_list() == sorted(df["id"].to_list())


def test_column_mapping_and_missing_column_named(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [b'{"body": "hello there"}'])
    settings = WEB | {"columns": {"text": "body"}}
    assert (
        ingest_records(read_records(path), path, "web", "a", settings)["text"][0] == "hello there"
    )
    with pytest.raises(CliError, match=r"row 0: missing column 'text'.*sources.web.columns.text"):
        ingest_records(read_records(path), path, "web", "a", WEB)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "ok"', r"a.jsonl:2: malformed JSON"),
        (b'{"text": "caf\xe9"}', r"a.jsonl:2: invalid UTF-8"),
        (b'{"text": 42}', r"row 1, column 'text': expected a string, got int"),
        (b'{"text": "   "}', r"row 1, column 'text': empty text"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, line, message):
    path = write_lines(tmp_path / "a.jsonl", [b'{"text": "fine"}', line])
    with pytest.raises(CliError, match=message):
        ingest_records(read_records(path), path, "web", "a", WEB)


def test_duplicate_ids_from_id_column(tmp_path):
    path = write_lines(
        tmp_path / "a.jsonl", [b'{"id": "x", "text": "a"}', b'{"id": "x", "text": "b"}']
    )
    with pytest.raises(CliError, match=r"duplicate id 'web/x' \(first at row 0\)"):
        ingest_records(read_records(path), path, "web", "a", WEB | {"id_column": "id"})


def test_parquet_source_and_list_field(tmp_path):
    path = str(tmp_path / "o.parquet")
    pl.DataFrame(
        {"course": ["C"], "unit": ["U"], "covered": [["A", "B"]], "section": [None]}
    ).write_parquet(path)
    settings = {"source": "o", "family": "course_outline", "columns": {}, "id_column": None}
    df = ingest_records(read_records(path), path, "o", "o", settings)
    assert df.to_dicts() == [
        {
            "id": "o/o/0000000",
            "course": "C",
            "section": None,
            "unit": "U",
            "covered": ["A", "B"],
            "chapter": None,
            "reference": None,
        }
    ]


# --- local formats, families, quarantine and the Hub path ------------------------------


def run_ingest(tmp_path, input_path, settings, shard="a"):
    """The `cosmopedia ingest` step in-process: (exit code, shard path, quarantine path)."""
    from cosmopedia.cli import main

    out, quarantine = tmp_path / "out" / f"{shard}.parquet", tmp_path / "out" / f"{shard}.q.json"
    code = main(
        [
            "ingest", "--input", str(input_path), "--output", str(out), "--shard", shard,
            "--quarantine", str(quarantine), "--settings", json.dumps(INGEST_DEFAULTS | settings),
        ]
    )  # fmt: skip
    return code, out, quarantine


def test_jsonl_zst_is_read_like_jsonl(tmp_path):
    import zstandard

    lines = b'{"text": "one"}\n\n{"text": "two"}\n'
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (tmp_path / "a.jsonl").write_bytes(lines)
    assert read_records(str(tmp_path / "a.jsonl.zst")) == read_records(str(tmp_path / "a.jsonl"))
    assert read_records(str(tmp_path / "a.jsonl")) == [{"text": "one"}, {"text": "two"}]


@pytest.mark.parametrize(
    ("family", "record", "expected"),
    [
        ("wikihow", {"title": " How to Fold a Crane "}, {"title": "How to Fold a Crane"}),
        ("auto_math_text", {"text": "Let $x^2 = 4$."}, {"text": "Let $x^2 = 4$."}),
        (
            "prompts",
            {"prompt": "  Write a poem.\n", "format": "poem", "seed_data": " web "},
            {"prompt": "  Write a poem.\n", "seed_data": " web ", "format": "poem",
             "audience": None},
        ),
        (
            "course_outline",
            {"course": "C", "unit": "U", "chapter": "Ch", "reference": "Some text."},
            {"course": "C", "section": None, "unit": "U", "covered": [], "chapter": "Ch",
             "reference": "Some text."},
        ),
    ],
)  # fmt: skip
def test_new_family_fields(family, record, expected):
    settings = {"source": "s", "family": family, "columns": {}, "id_column": None}
    df = ingest_records([record], "f.jsonl", "s", "f", settings)
    assert df.to_dicts() == [{"id": "s/f/0000000", **expected}]


def test_prompts_family_keeps_the_prompt_verbatim_but_rejects_blank_ones():
    settings = {"source": "p", "family": "prompts", "columns": {}, "id_column": None}
    with pytest.raises(CliError, match=r"row 0, column 'prompt': empty prompt"):
        ingest_records([{"prompt": " \n "}], "f.jsonl", "p", "f", settings)


def test_quarantine_keeps_good_rows_and_ids_of_later_rows(tmp_path):
    path = write_lines(
        tmp_path / "a.jsonl",
        [
            b'{"text": "zero"}',
            b'{"text": ',
            b'{"text": "two"}',
            b'{"text": 3}',
            b'{"text": "four"}',
        ],
    )
    code, out, quarantine = run_ingest(tmp_path, path, WEB | {"on_bad_rows": "quarantine"})
    assert code == 0
    # Row ids follow the file's rows, so a bad row never shifts the ids of the others.
    assert pl.read_parquet(out)["id"].to_list() == [
        "web/a/0000000",
        "web/a/0000002",
        "web/a/0000004",
    ]
    report = json.loads(quarantine.read_text())
    assert (report["count"], report["rows_read"], report["rows_kept"]) == (2, 5, 3)
    assert [(r["row"], r["line"]) for r in report["rows"]] == [(1, 2), (3, 4)]
    assert "a.jsonl:2: malformed JSON" in report["rows"][0]["error"]
    assert report["rows"][0]["raw"] == '{"text": '
    assert "row 3, column 'text': expected a string, got int" in report["rows"][1]["error"]
    assert report["rows"][1]["raw"] == '{"text": 3}'


def test_fail_mode_writes_an_empty_quarantine_report(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [b'{"text": "fine"}'])
    code, out, quarantine = run_ingest(tmp_path, path, WEB | {"on_bad_rows": "fail"})
    assert code == 0 and pl.read_parquet(out).height == 1
    assert json.loads(quarantine.read_text())["count"] == 0


def make_hub_folder(tmp_path):
    """A local folder laid out like a Hub dataset repository."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    pl.DataFrame(
        {"body": ["first extract", "second extract"], "label": ["Tides", None], "n": [1, 2]}
    ).write_parquet(repo / "data" / "train-00000-of-00001.parquet")
    (repo / "data" / "titles.jsonl").write_text(
        '{"title": "How to Sharpen a Pencil"}\n{"title": "How to Tie a Knot"}\n'
    )
    return repo


def test_hub_rows_stream_through_datasets(tmp_path, monkeypatch):
    from cosmopedia import hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = make_hub_folder(tmp_path)
    rows = list(hub.iter_rows("web", str(repo), "0" * 40, "data/train-00000-of-00001.parquet"))
    assert rows == [
        {"body": "first extract", "label": "Tides", "n": 1},
        {"body": "second extract", "label": None, "n": 2},
    ]
    rows = list(hub.iter_rows("wh", str(repo), "v1", "data/titles.jsonl"))
    assert [r["title"] for r in rows] == ["How to Sharpen a Pencil", "How to Tie a Knot"]


def test_hub_shard_ingests_through_the_cli(tmp_path, monkeypatch):
    from cosmopedia import hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A relative folder: a valid repo_id that datasets opens as a local repository.
    make_hub_folder(tmp_path / "local")
    monkeypatch.chdir(tmp_path)
    spec = {"repo_id": "local/repo", "revision": "refs/convert/parquet", "split": "train"}
    ref = hub.shard_ref(spec["repo_id"], spec["revision"], "data/train-00000-of-00001.parquet")
    assert hub.parse_ref(ref) == (
        "local/repo",
        "refs/convert/parquet",
        spec_path := "data/train-00000-of-00001.parquet",
    )
    settings = WEB | {"columns": {"text": "body", "topic": "label"}, "hub": spec}
    code, out, quarantine = run_ingest(tmp_path, ref, settings, shard="train-00000-of-00001")
    assert code == 0
    assert pl.read_parquet(out).to_dicts() == [
        {"id": "web/train-00000-of-00001/0000000", "text": "first extract", "topic": "Tides"},
        {"id": "web/train-00000-of-00001/0000001", "text": "second extract", "topic": None},
    ]
    assert json.loads(quarantine.read_text())["input"].endswith(spec_path)


def test_seed_from_settings_and_changed_seed_refused(tmp_path, capsys):
    """The workflow passes the seed file and its planned sha256 in the settings: ingest
    reads that file, records its counts in the shard's metadata, and refuses the file
    once its bytes differ from what planning hashed."""
    from cosmopedia.cli import main
    from cosmopedia.hashing import sha256_file
    from cosmopedia.io import read_parquet_metadata

    seed = write_lines(tmp_path / "s.jsonl", [b'{"text": "one"}', b'{"text": "two"}'])
    out = tmp_path / "out" / "s.parquet"
    settings = {**WEB, "seed": seed, "seed_sha256": sha256_file(seed)}
    argv = ["ingest", "--output", str(out), "--shard", "s", "--settings"]
    assert main([*argv, json.dumps(INGEST_DEFAULTS | settings)]) == 0
    record = read_parquet_metadata(out)["ingest"]
    assert (record["input"], record["rows_read"], record["rows_kept"], record["count"]) == (
        seed, 2, 2, 0,
    )  # fmt: skip

    write_lines(tmp_path / "s.jsonl", [b'{"text": "one"}', b'{"text": "changed"}'])
    out.unlink()
    assert main([*argv, json.dumps(INGEST_DEFAULTS | settings)]) == 2
    err = capsys.readouterr().err
    assert "changed after the workflow was planned" in err and "run Snakemake again" in err
    assert not out.exists()
