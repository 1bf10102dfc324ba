import json

import polars as pl
import pytest

from cosmopedia.cli import CliError
from cosmopedia.ingest import ingest_records, read_records

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
        {"id": "o/o/0000000", "course": "C", "section": None, "unit": "U", "covered": ["A", "B"]}
    ]
