"""Ingest: one seed file -> one seed shard (Parquet, stable row ids, validated fields).

A seed shard holds `id` plus the fields its family's prompt builder needs, taken from the
source columns named in the config. Bad rows fail the step with the file, line and field
named; nothing is written unless the whole shard is valid.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from cosmopedia.cli import CliError, load_settings
from cosmopedia.io import write_parquet

log = logging.getLogger("cosmopedia.ingest")

# field -> (required, kind) per seed family; kind is "str" or "list[str]".
FAMILY_FIELDS: dict[str, dict[str, tuple[bool, str]]] = {
    "web_samples": {"text": (True, "str"), "topic": (False, "str")},
    "stories": {"text": (True, "str")},
    "course_outline": {
        "course": (True, "str"),
        "section": (False, "str"),
        "unit": (True, "str"),
        "covered": (False, "list[str]"),
    },
}


def read_records(path: str) -> list[dict]:
    """Rows of a .jsonl, .jsonl.zst or .parquet file, as dicts, in file order."""
    if path.endswith(".parquet"):
        return pl.read_parquet(path).to_dicts()
    raw = Path(path).read_bytes()
    if path.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    records = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise CliError(f"{path}:{lineno}: invalid UTF-8 ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from exc
        if not isinstance(records[-1], dict):
            raise CliError(f"{path}:{lineno}: expected a JSON object per line")
    return records


def _field_value(value, kind: str, where: str):
    if kind == "list[str]":
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CliError(f"{where}: expected a list of strings, got {type(value).__name__}")
        return value
    if value is None:
        return None
    if not isinstance(value, str):
        raise CliError(f"{where}: expected a string, got {type(value).__name__}")
    return value.strip() or None


def ingest_records(records: list[dict], path: str, source: str, shard: str, settings: dict):
    family = settings["family"]
    fields = FAMILY_FIELDS[family]
    columns = {field: settings["columns"].get(field, field) for field in fields}
    id_column = settings.get("id_column")
    rows, seen = [], {}
    for index, record in enumerate(records):
        where = f"{path}: row {index}"
        row = {}
        for field, (required, kind) in fields.items():
            column = columns[field]
            if column not in record and required:
                raise CliError(
                    f"{where}: missing column {column!r} (seed field {field!r} of family "
                    f"{family}; map it with sources.{source}.columns.{field})"
                )
            row[field] = _field_value(record.get(column), kind, f"{where}, column {column!r}")
            if required and not row[field]:
                raise CliError(f"{where}, column {column!r}: empty {field}")
        if id_column:
            if not isinstance(record.get(id_column), str | int):
                raise CliError(f"{where}: id column {id_column!r} missing or not a string")
            row_id = f"{source}/{record[id_column]}"
        else:
            row_id = f"{source}/{shard}/{index:07d}"
        if row_id in seen:
            raise CliError(f"{where}: duplicate id {row_id!r} (first at row {seen[row_id]})")
        seen[row_id] = index
        rows.append({"id": row_id, **row})
    schema = {"id": pl.String} | {
        field: pl.List(pl.String) if kind == "list[str]" else pl.String
        for field, (_, kind) in fields.items()
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def add_arguments(name, parser):
    parser.add_argument("--input", required=True, help="seed file (.jsonl, .jsonl.zst, .parquet)")
    parser.add_argument("--output", required=True, help="seed shard (.parquet)")
    parser.add_argument("--shard", required=True, help="shard name (file name without suffix)")
    parser.add_argument(
        "--settings",
        required=True,
        help='JSON (or @file): {"source", "family", "columns", "id_column"}',
    )


def main(args) -> int:
    settings = load_settings(args.settings)
    if settings["family"] not in FAMILY_FIELDS:
        raise CliError(f"unknown seed family {settings['family']!r}")
    records = read_records(args.input)
    df = ingest_records(records, args.input, settings["source"], args.shard, settings)
    write_parquet(df, args.output)
    log.info("ingested %d rows from %s into %s", df.height, args.input, args.output)
    return 0
