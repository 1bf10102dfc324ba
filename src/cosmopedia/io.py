"""Deterministic, atomic reading and writing of the workflow's data files.

Every data file is Parquet with zstd (same rows -> same bytes), rows sorted by `id`, and
written atomically: a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import zstandard

PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 9
# Fixed row-group size: the byte layout must not depend on anything but the rows.
PARQUET_ROW_GROUP_SIZE = 50_000


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


# The random part of tempfile's names (mkstemp, mkdtemp, TemporaryDirectory).
TEMP_RANDOM = r"[a-z0-9_]{8}"


def remove_leftovers(parent: str | os.PathLike, prefix: str, suffix: str = "") -> list[str]:
    """Remove `<prefix><random><suffix>` entries of `parent`: temporary files or folders of
    this one output that a killed earlier run left behind (a kill skips `finally`).

    Called after the output was written, so only ever by the job that owns the output;
    the exact pattern never matches another output's temporary names.
    """
    pattern = re.compile(re.escape(prefix) + TEMP_RANDOM + re.escape(suffix))
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, leftovers: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Then temporary files of `path` left by a killed earlier write are removed, unless
    `leftovers` is False (files that several processes may write at once).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files: give outputs the usual mode, so shared result folders work.
    os.chmod(tmp_path, 0o666 & ~current_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    if leftovers:
        remove_leftovers(path.parent, f".{path.name}.", ".tmp")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp dir beside `path`; it replaces `path` only if the block succeeds.

    Then temporary folders of `path` left by a killed earlier run are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders
    old = None
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "dir")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    for suffix in (".tmp", ".old"):
        remove_leftovers(path.parent, f".{path.name}.", suffix)


# Key-value metadata of the workflow's Parquet files: cosmopedia.<name> -> JSON. A shard's
# record of how it was made travels inside the shard when it is deterministic (ingest
# counts and bad rows). Generation provenance holds run timings, so it stays a JSON file
# in the shard's generations folder: the generations' bytes stay the same from run to run.
METADATA_PREFIX = "cosmopedia."
INGEST_KEY = "ingest"  # seeds/<source>/<shard>.parquet: rows read, kept, bad rows set aside
CLEAN_KEY = "clean"  # clean/<source>/<shard>/kept.parquet: how text_token_length was counted


def write_parquet(
    df: pl.DataFrame,
    path: str | os.PathLike,
    sort_by: str | None = "id",
    metadata: dict[str, object] | None = None,
) -> None:
    """Write `df` as deterministic zstd Parquet, sorted by `sort_by`, atomically.

    `metadata` (JSON-able values) is stored as key-value metadata, cosmopedia.<name>.
    """
    if sort_by is not None and sort_by in df.columns:
        df = df.sort(sort_by, maintain_order=True)
    kv = {
        METADATA_PREFIX + name: json.dumps(value, sort_keys=True, ensure_ascii=False)
        for name, value in (metadata or {}).items()
    }
    with atomic_path(path) as tmp:
        df.write_parquet(
            tmp,
            compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL,
            row_group_size=PARQUET_ROW_GROUP_SIZE,
            statistics=True,
            metadata=kv or None,
        )


def read_parquet(path: str | os.PathLike) -> pl.DataFrame:
    return pl.read_parquet(path)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, object]:
    """The cosmopedia.<name> metadata of a Parquet file written by write_parquet: name -> value."""
    return {
        key[len(METADATA_PREFIX) :]: json.loads(value)
        for key, value in pl.read_parquet_metadata(path).items()
        if key.startswith(METADATA_PREFIX)
    }


def write_text(text: str, path: str | os.PathLike, leftovers: bool = True) -> None:
    with atomic_path(path, leftovers=leftovers) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj, path: str | os.PathLike, leftovers: bool = True) -> None:
    """Write JSON with sorted keys and a trailing newline, atomically (stable bytes)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_text(text, path, leftovers=leftovers)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl_zst(rows, path: str | os.PathLike, level: int = 10) -> None:
    """Write dict rows as zstd-compressed JSON lines (no timestamp in the frame), atomically."""
    cctx = zstandard.ZstdCompressor(level=level)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, cctx.stream_writer(raw) as out:
        for row in rows:
            out.write((json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode())


def iter_jsonl_zst(path: str | os.PathLike):
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as raw, dctx.stream_reader(raw) as reader:
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def require_columns(df: pl.DataFrame, path, columns) -> None:
    """A table read from `path` has these columns, without nulls."""
    from cosmopedia.errors import CliError

    for column in columns:
        if column not in df.columns:
            raise CliError(f"{path}: missing column {column!r}")
        if df[column].null_count():
            raise CliError(f"{path}: null values in column {column!r}")


def add_arguments(name: str, parser) -> None:
    parser.add_argument("files", nargs="+", help="Parquet files written by the workflow")


def metadata_main(args) -> int:
    """Print each file's cosmopedia.* metadata as JSON ({file: {name: value}})."""
    from cosmopedia.errors import CliError

    out = {}
    for path in args.files:
        try:
            out[path] = read_parquet_metadata(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise CliError(f"{path}: cannot read Parquet metadata: {exc}") from exc
    print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    return 0
