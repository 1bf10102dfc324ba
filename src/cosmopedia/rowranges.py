"""Row ranges of seed files: one seed file split into several shards (`rows_per_shard`).

A source with `rows_per_shard` (or `prompts_per_shard`) splits each seed file into ranges
of that many rows, [start, stop), each range a shard named `<file stem>_r<start>-<last>`
(e.g. `train-00000-of-00009_r000000-024999`, numbers zero-padded to 6 digits). A row is
the same row whatever the split: its index in the file (non-blank lines of JSONL, rows of
Parquet) is what its id carries (`<source>/<file stem>/<row index>`), so a new
`rows_per_shard` renames shards but keeps every row's id, and so its generation seed.

Planning needs each file's row count: the Parquet footer (never the data), the number of
non-blank lines of a JSONL file (read once, as its sha256 is; cached by size and mtime
like it, see cosmopedia.fingerprint), or for a Hub file the count `cosmopedia lock`
recorded. A range's content digest (`range_digests`) stands for its rows only, so an edit
of one row re-ingests the one range that holds it:
- JSONL: sha256 of the raw lines of the range's rows, in order;
- Parquet: sha256 of the schema, the range's place in its row groups and the bytes of the
  row groups it overlaps (column chunks as stored: no decoding).

This module is imported at parse time: pyarrow and zstandard are imported when used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator

from cosmopedia.errors import PlanError

DIGEST_FORMAT = "cosmopedia.rows/1"


def split(rows: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """The ranges [start, stop) of a file of `rows` rows, `rows_per_shard` rows each (the
    last one may hold fewer)."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    return [(start, min(start + rows_per_shard, rows)) for start in range(0, rows, rows_per_shard)]


def range_name(stem: str, start: int, stop: int) -> str:
    """The shard name of rows [start, stop) of the file whose own shard name is `stem`."""
    return f"{stem}_r{start:06d}-{stop - 1:06d}"


def is_parquet(path: str) -> bool:
    return path.endswith(".parquet")


# --- JSONL ------------------------------------------------------------------------------


def lines(path: str) -> Iterator[bytes]:
    """Raw lines of a .jsonl or .jsonl.zst file, streamed (each with its line end)."""
    if path.endswith(".zst"):
        import zstandard

        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw)
            yield from io.BufferedReader(reader)
    else:
        with open(path, "rb") as f:
            yield from f


def _scan_jsonl(path: str, rows_per_shard: int | None) -> tuple[int, list[str]]:
    """(rows, digest of each range of `rows_per_shard` rows) of a JSONL file, in one pass
    (no digests without `rows_per_shard`)."""
    digests: list = []
    index = 0
    for line in lines(path):
        if not line.strip():
            continue
        if rows_per_shard:
            if index % rows_per_shard == 0:
                digests.append(_new_digest())
            digests[-1].update(len(line).to_bytes(8, "little"))
            digests[-1].update(line)
        index += 1
    return index, [d.hexdigest() for d in digests]


def jsonl_range_digest(path: str, start: int, stop: int) -> str:
    """The digest of rows [start, stop) of a JSONL file (reads up to row `stop`)."""
    digest = _new_digest()
    index = 0
    for line in lines(path):
        if not line.strip():
            continue
        if index >= stop:
            break
        if index >= start:
            digest.update(len(line).to_bytes(8, "little"))
            digest.update(line)
        index += 1
    return digest.hexdigest()


def _new_digest():
    digest = hashlib.sha256(DIGEST_FORMAT.encode())
    digest.update(b"jsonl\0")
    return digest


# --- Parquet ----------------------------------------------------------------------------


def footer_rows(path: str) -> int:
    """Rows of a Parquet file, from its footer (no data read)."""
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _row_groups(metadata) -> list[tuple[int, int, int, int]]:
    """(first row, rows, byte offset, bytes) of each row group, from the footer."""
    groups, first = [], 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        spans = []
        for c in range(group.num_columns):
            column = group.column(c)
            start = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset is not None:
                start = min(start, column.dictionary_page_offset)
            spans.append((start, start + column.total_compressed_size))
        begin = min(s for s, _ in spans) if spans else 0
        end = max(e for _, e in spans) if spans else 0
        groups.append((first, group.num_rows, begin, end - begin))
        first += group.num_rows
    return groups


def parquet_range_digests(path: str, ranges: list[tuple[int, int]]) -> list[str]:
    """The digest of each range of a Parquet file: its schema, its place in the row groups
    it overlaps and their stored bytes (a row group is read once however many ranges
    overlap it)."""
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    schema = metadata.schema.to_arrow_schema().to_string(show_schema_metadata=False)
    groups = _row_groups(metadata)
    group_digest: dict[int, bytes] = {}
    out = []
    with open(path, "rb") as f:
        for start, stop in ranges:
            digest = hashlib.sha256(DIGEST_FORMAT.encode())
            digest.update(b"parquet\0" + schema.encode() + b"\0")
            overlapping = [
                g for g, (first, n, _, _) in enumerate(groups) if first < stop and first + n > start
            ]
            first_row = groups[overlapping[0]][0] if overlapping else 0
            digest.update(f"{start - first_row} {stop - start}\0".encode())
            for g in overlapping:
                if g not in group_digest:
                    _, _, offset, size = groups[g]
                    f.seek(offset)
                    group_digest[g] = hashlib.sha256(f.read(size)).digest()
                digest.update(group_digest[g])
            out.append(digest.hexdigest())
    return out


# --- both ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _reading(path: str):
    """Errors reading a seed file at planning, as one PlanError naming it."""
    try:
        yield
    except OSError as exc:
        raise PlanError(f"{path}: cannot read seed file: {exc}") from exc
    except Exception as exc:  # a corrupt Parquet footer or zstd frame
        raise PlanError(f"{path}: cannot read seed file: {type(exc).__name__}: {exc}") from exc


def scan(path: str, rows_per_shard: int) -> tuple[int, list[str]]:
    """(rows, digest of each range of `rows_per_shard` rows) of a local seed file."""
    with _reading(path):
        if is_parquet(path):
            rows = footer_rows(path)
            return rows, parquet_range_digests(path, split(rows, rows_per_shard))
        return _scan_jsonl(path, rows_per_shard)


def count_rows(path: str) -> int:
    """Rows of a local seed file: the Parquet footer, or the non-blank lines of JSONL."""
    with _reading(path):
        if is_parquet(path):
            return footer_rows(path)
        return _scan_jsonl(path, None)[0]


def count_rows_in(f, name: str) -> int:
    """Rows of an open binary seed file (e.g. one on the Hub, read through fsspec) named
    `name`: a Parquet footer's count (only the file's last bytes are read), or the
    non-blank lines of JSONL (read whole)."""
    if is_parquet(name):
        import pyarrow.parquet as pq

        return pq.ParquetFile(f).metadata.num_rows
    if name.endswith(".zst"):
        import zstandard

        f = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f))
    return sum(1 for line in f if line.strip())


def range_digest(path: str, start: int, stop: int) -> str:
    """The digest of rows [start, stop) of a local seed file, as `scan` computes it."""
    if is_parquet(path):
        return parquet_range_digests(path, [(start, stop)])[0]
    return jsonl_range_digest(path, start, stop)
