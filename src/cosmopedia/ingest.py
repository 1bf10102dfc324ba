"""Ingest: one seed file -> one seed shard (Parquet, stable row ids, validated fields).

A seed shard holds `id` plus the fields its family's prompt builder needs, taken from the
source columns named in the config. The seed file is a local .jsonl, .jsonl.zst or
.parquet file, or one data file of a Hugging Face dataset at a pinned revision
(`hf://datasets/<repo>@<revision>/<path>`, streamed; see cosmopedia.hub).

Bad rows (malformed JSON, invalid UTF-8, a missing column, an empty, overlong or
non-string field, a duplicate id) fail the step with the file, row and column named, and
nothing is written. With `sources.<name>.on_bad_rows: quarantine` they are set aside
instead: the shard keeps the good rows, and its Parquet metadata (cosmopedia.ingest; shown
by `cosmopedia metadata <shard>`) lists every bad row (row number, line, error, the
start of the raw row) with their count and the rows read and kept. Problems of
the whole file always fail: an unreadable file or Hub dataset, a required column absent
from a Parquet file's schema, an empty file, or a file whose rows are all bad.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cosmopedia import hub
from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.hashing import sha256_file
from cosmopedia.io import INGEST_KEY, write_json, write_parquet

log = logging.getLogger("cosmopedia.ingest")

# field -> (required, kind) per seed family. Kinds: "str" (stripped; blank counts as
# missing), "raw" (kept exactly as given; blank counts as missing), "list[str]", "json" (a
# nested list or object, stored as its JSON text). With the settings' `verbatim` (a template
# set whose builders strip as the original did: seed_fields: verbatim), "str" fields are
# kept exactly as given too, and an empty one counts as given: only a missing one is missing.
FAMILY_FIELDS: dict[str, dict[str, tuple[bool, str]]] = {
    "web_samples": {"text": (True, "str"), "topic": (False, "str")},
    "stories": {"text": (True, "str")},
    "course_outline": {
        "course": (True, "str"),
        "section": (False, "str"),
        "unit": (True, "str"),
        "covered": (False, "list[str]"),
        "chapter": (False, "str"),
        "reference": (False, "str"),
    },
    "wikihow": {"title": (True, "str")},
    "auto_math_text": {"text": (True, "str")},
    # One OpenStax book per row (HuggingFaceTB/openstax_paragraphs): its nested chapters go
    # to the prompt builder as they are, which walks them as the original did.
    "openstax": {
        "book_title": (True, "str"),
        "language": (False, "str"),
        "chapters": (True, "json"),
    },
    # Prompts taken as they are (e.g. Cosmopedia's own), with their labels when present.
    "prompts": {
        "prompt": (True, "raw"),
        "seed_data": (False, "raw"),
        "format": (False, "str"),
        "audience": (False, "str"),
    },
}

RAW_PREVIEW_CHARS = 2000  # how much of a bad row the quarantine file keeps


class BadRow(ValueError):
    """One row cannot be used; the message names the file, row and column."""


@dataclass
class Item:
    """One row of a seed file: its parsed record, or why it could not be parsed."""

    index: int  # row number in the file (non-blank lines of JSONL, rows of Parquet)
    line: int | None  # 1-based line number (JSONL only)
    record: dict | None
    error: str | None = None
    raw: str | None = None


def _lines(path: str) -> Iterator[bytes]:
    """Raw lines of a .jsonl or .jsonl.zst file, streamed."""
    if path.endswith(".zst"):
        import zstandard

        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw)
            yield from io.BufferedReader(reader)
    else:
        with open(path, "rb") as f:
            yield from f


def iter_file_items(path: str) -> Iterator[Item]:
    """Rows of a local .jsonl, .jsonl.zst or .parquet file, in file order."""
    try:
        if path.endswith(".parquet"):
            df = pl.read_parquet(path)
            for index, record in enumerate(df.iter_rows(named=True)):
                yield Item(index, None, record)
            return
        index = 0
        for lineno, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            yield _parse_line(path, lineno, index, line)
            index += 1
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise CliError(f"{path}: cannot read seed file: {type(exc).__name__}: {exc}") from exc


def _parse_line(path: str, lineno: int, index: int, line: bytes) -> Item:
    head = line[: RAW_PREVIEW_CHARS * 4].rstrip(b"\r\n")
    raw = head.decode("utf-8", errors="replace")[:RAW_PREVIEW_CHARS]
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Item(index, lineno, None, f"{path}:{lineno}: invalid UTF-8 ({exc.reason})", raw)
    except json.JSONDecodeError as exc:
        return Item(index, lineno, None, f"{path}:{lineno}: malformed JSON ({exc.msg})", raw)
    if not isinstance(record, dict):
        return Item(index, lineno, None, f"{path}:{lineno}: expected a JSON object per line", raw)
    return Item(index, lineno, record)


def read_records(path: str) -> list[dict]:
    """Rows of a .jsonl, .jsonl.zst or .parquet file, as dicts; the first bad line fails."""
    records = []
    for item in iter_file_items(path):
        if item.error:
            raise CliError(item.error)
        records.append(item.record)
    return records


def field_columns(settings: step_settings.Ingest) -> dict[str, str]:
    """Seed field -> column of the source file (the field's own name unless mapped)."""
    fields = FAMILY_FIELDS[settings.family]
    return {field: settings.columns.get(field, field) for field in fields}


def check_schema(columns: Iterable[str], path: str, settings: step_settings.Ingest) -> None:
    """Fail at once when a file's schema lacks the column of a required seed field."""
    available = set(columns)
    family, source = settings.family, settings.source
    for field, column in field_columns(settings).items():
        if FAMILY_FIELDS[family][field][0] and column not in available:
            raise CliError(
                f"{path}: no column {column!r} (seed field {field!r} of family {family}; "
                f"the file has {', '.join(sorted(available)) or 'no columns'}; "
                f"map it with sources.{source}.columns.{field})"
            )


def _field_value(value, kind: str, where: str, max_chars: int, source: str, verbatim=False):
    if kind == "json":
        if not isinstance(value, list | dict):
            raise BadRow(f"{where}: expected a list or an object, got {type(value).__name__}")
        text = json.dumps(value, ensure_ascii=False)
        _check_length(text, where, max_chars, source)
        return text
    if kind == "list[str]":
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRow(f"{where}: expected a list of strings, got {type(value).__name__}")
        for v in value:
            _check_length(v, where, max_chars, source)
        return value
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRow(f"{where}: expected a string, got {type(value).__name__}")
    _check_length(value, where, max_chars, source)
    if verbatim:
        return value
    if kind == "raw":
        return value if value.strip() else None
    return value.strip() or None


def _check_length(value: str, where: str, max_chars: int, source: str) -> None:
    if len(value) > max_chars:
        raise BadRow(
            f"{where}: {len(value):,} characters, more than sources.{source}.max_chars "
            f"({max_chars:,})"
        )


def _preview(record) -> str:
    text = json.dumps(record, ensure_ascii=False, default=repr)
    return text[:RAW_PREVIEW_CHARS]


def ingest_items(
    items: Iterable[Item], path: str, source: str, shard: str, settings: step_settings.Ingest
):
    """Validate rows into a seed shard. Returns (shard, quarantined rows, rows read)."""
    family = settings.family
    fields = FAMILY_FIELDS[family]
    columns = field_columns(settings)
    id_column = settings.id_column
    quarantine = settings.on_bad_rows == "quarantine"
    max_chars = settings.max_chars
    verbatim = bool(settings.verbatim)
    rows, seen, bad, total = [], {}, [], 0
    for item in items:
        total += 1
        try:
            if item.error:
                raise BadRow(item.error)
            row_id, row = _row(item, path, source, shard, family, fields, columns, id_column)
            for field, (required, kind) in fields.items():
                where = f"{path}: row {item.index}, column {columns[field]!r}"
                row[field] = _field_value(row[field], kind, where, max_chars, source, verbatim)
                if required and (row[field] is None if verbatim else not row[field]):
                    raise BadRow(f"{where}: empty {field}")
            if row_id in seen:
                raise BadRow(
                    f"{path}: row {item.index}: duplicate id {row_id!r} "
                    f"(first at row {seen[row_id]})"
                )
        except BadRow as exc:
            if not quarantine:
                raise CliError(str(exc)) from None
            raw = item.raw if item.record is None else _preview(item.record)
            bad.append({"row": item.index, "line": item.line, "error": str(exc), "raw": raw})
            continue
        seen[row_id] = item.index
        rows.append({"id": row_id, **row})
    if total == 0:
        raise CliError(
            f"{path}: empty shard: the seed file has no rows "
            f"(fix it or leave it out of sources.{source})"
        )
    if not rows:
        raise CliError(
            f"{path}: all {total} rows are bad, nothing left to ingest "
            f"(sources.{source}.on_bad_rows is quarantine); first: {bad[0]['error']}"
        )
    schema = {"id": pl.String} | {
        field: pl.List(pl.String) if kind == "list[str]" else pl.String
        for field, (_, kind) in fields.items()
    }
    return pl.DataFrame(rows, schema=schema, orient="row"), bad, total


def _row(item: Item, path, source, shard, family, fields, columns, id_column):
    record = item.record
    where = f"{path}: row {item.index}"
    row = {}
    for field, (required, _) in fields.items():
        column = columns[field]
        if column not in record and required:
            raise BadRow(
                f"{where}: missing column {column!r} (seed field {field!r} of family "
                f"{family}; map it with sources.{source}.columns.{field})"
            )
        row[field] = record.get(column)
    if id_column:
        value = record.get(id_column)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise BadRow(f"{where}: id column {id_column!r} missing or not a string")
        return f"{source}/{value}", row
    return f"{source}/{shard}/{item.index:07d}", row


def ingest_records(
    records: list[dict], path: str, source: str, shard: str, settings: step_settings.Ingest
):
    """The seed shard of already parsed records (row i is records[i])."""
    items = (Item(index, None, record) for index, record in enumerate(records))
    return ingest_items(items, path, source, shard, settings)[0]


def hub_items(ref: str, settings: step_settings.Ingest) -> Iterator[Item]:
    """Rows of one Hub data file, checked against the source's `hub` settings."""
    spec = settings.hub
    repo_id, revision, path = hub.parse_ref(ref)
    if not spec or (spec.repo_id, spec.revision) != (repo_id, revision):
        raise CliError(
            f"{ref}: does not belong to sources.{settings.source}.hub "
            f"({spec and spec.repo_id}@{spec and spec.revision})"
        )
    rows = hub.iter_rows(
        settings.source,
        repo_id,
        revision,
        path,
        config_name=spec.config_name,
        split=spec.split,
    )
    for index, record in enumerate(rows):
        if index == 0 and path.endswith(".parquet"):
            check_schema(record, ref, settings)  # Parquet rows carry every column
        yield Item(index, None, record)


def ingest_record(
    args, settings: step_settings.Ingest, bad: list[dict], total: int, kept: int
) -> dict:
    """Rows read and kept, and the bad rows set aside: stored in the shard's Parquet
    metadata (cosmopedia.ingest), and with --quarantine also written as JSON."""
    return {
        "source": settings.source,
        "shard": args.shard,
        "input": args.input,
        "on_bad_rows": settings.on_bad_rows,
        "rows_read": total,
        "rows_kept": kept,
        "count": len(bad),
        "rows": bad,
    }


def add_arguments(name, parser):
    parser.add_argument(
        "--input",
        help="seed file (.jsonl, .jsonl.zst, .parquet) or hf://datasets/<repo>@<revision>/<file>"
        ' (default: the settings\' "seed")',
    )
    parser.add_argument("--output", required=True, help="seed shard (.parquet)")
    parser.add_argument("--shard", required=True, help="shard name (file name without suffix)")
    parser.add_argument(
        "--quarantine",
        help="also write the quarantine report here (.json: rows read and kept, bad rows set "
        "aside); it is always in the shard's Parquet metadata (cosmopedia.ingest)",
    )
    parser.add_argument(
        "--settings",
        required=True,
        help='JSON (or @file): {"source", "family", "columns", "id_column", "on_bad_rows", '
        '"max_chars", "hub", "seed", "seed_sha256"}',
    )


def check_seed(path: str, expected_sha256: str) -> None:
    """Refuse a seed file whose bytes changed after the workflow was planned."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise CliError(f"{path}: cannot read seed file: {exc}") from exc
    if actual != expected_sha256:
        raise CliError(
            f"{path}: the seed file changed after the workflow was planned (sha256 {actual}, "
            f"planned {expected_sha256}); run Snakemake again to ingest the new content"
        )


def main(args) -> int:
    settings = step_settings.load(step_settings.Ingest, args.settings)
    if settings.family not in FAMILY_FIELDS:
        raise CliError(f"unknown seed family {settings.family!r}")
    if args.input is None:
        if settings.seed is None:
            raise CliError('no seed file: give --input or "seed" in --settings')
        args.input = settings.seed
    if hub.is_ref(args.input):
        items = hub_items(args.input, settings)
    else:
        if settings.seed_sha256 is not None:
            check_seed(args.input, settings.seed_sha256)
        if args.input.endswith(".parquet") and Path(args.input).is_file():
            try:
                schema = pl.read_parquet_schema(args.input)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise CliError(f"{args.input}: cannot read seed file: {exc}") from exc
            check_schema(schema, args.input, settings)
        items = iter_file_items(args.input)
    try:
        df, bad, total = ingest_items(items, args.input, settings.source, args.shard, settings)
    except hub.HubError as exc:
        raise CliError(str(exc)) from exc
    record = ingest_record(args, settings, bad, total, df.height)
    if args.quarantine:
        write_json(record, args.quarantine)
    write_parquet(df, args.output, metadata={INGEST_KEY: record})
    log.info("ingested %d of %d rows from %s into %s", df.height, total, args.input, args.output)
    if bad:
        log.warning(
            "%d bad rows of %s set aside, listed in the metadata of %s (first: %s)",
            len(bad), args.input, args.output, bad[0]["error"],
        )  # fmt: skip
    return 0
