"""What a generate job keeps beside its output (Snakemake deletes a job's declared outputs
before it runs again, never these), so that no finished row is sent twice:

* the checkpoint: every finished row, at once. One write per row, fsync every
  `checkpoint_every`, keyed by a hash of everything that determines the row's request
  (`requests.request_key`), so a killed job resumes without re-sending finished rows:
  only the requests in flight are lost. Deleted once the output is written.
* the previous output: the last generations.parquet the job wrote (a hard link: no copy)
  and the fields every request of it shared (`requests.request_fields`), so that any
  later run of the shard (`--forcerun`, `generation.retry_failed`) reuses the rows whose
  request has not changed, failed rows with their cause and attempts included.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import polars as pl

from cosmopedia import io
from cosmopedia.generation.requests import RESULT_SCHEMA, key_of

PREVIOUS_ROWS = "generations.parquet"
PREVIOUS_FIELDS = "request.json"


class Checkpoint:
    """Append-only JSON lines of finished rows, beside (never inside) the declared output.

    Each record is one write(2) on an O_APPEND descriptor, so a finished row survives a
    SIGKILL of the job at any point (the kernel has it); fsync every `flush_every` rows
    also keeps it through a node crash. The stream runs that fsync in a thread: on a
    shared file system it can take long enough to stall every request of the job.
    """

    def __init__(self, path: str | os.PathLike, flush_every: int):
        self.path = Path(path)
        self.flush_every = flush_every
        self.unflushed = 0
        self.fd: int | None = None

    def load(self, keys: dict[str, str]) -> dict[str, dict]:
        """The records whose key still matches, by row id (the last one of a row wins).
        Stale lines and a line truncated by a kill are skipped."""
        records: dict[str, dict] = {}
        if self.path.exists():
            # A kill may cut a line inside a multi-byte character: read it as garbage.
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if (
                        isinstance(record, dict)
                        and isinstance(record.get("id"), str)
                        and keys.get(record["id"]) == record.get("key")
                        and all(name in record for name in RESULT_SCHEMA)
                    ):
                        records[record["id"]] = record
        return records

    def keep(self, records: dict[str, dict]) -> None:
        """Rewrite the file with just `records` (those reused), so that appending starts
        on a clean line and a row re-sent now is not in it twice."""
        with io.atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in records.values():
                f.write(_json_line(record))

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict, sync: bool = True) -> bool:
        """Write `record`; fsync if due and `sync`. True if an fsync is due (not `sync`)."""
        data = _json_line(record).encode("utf-8")
        while data:  # a regular file takes it in one write; loop for the general case
            data = data[os.write(self.fd, data) :]
        self.unflushed += 1
        due = self.unflushed >= self.flush_every
        if due and sync:
            self.flush()
            return False
        return due

    def flush(self) -> None:
        os.fsync(self.fd)
        self.unflushed = 0

    def sync_in_background(self) -> None:
        """The fsync of `flush`, for a worker thread (the descriptor may close meanwhile)."""
        fd, self.unflushed = self.fd, 0
        with contextlib.suppress(OSError):
            os.fsync(fd)

    def close(self) -> None:
        if self.fd is not None:
            self.flush()
            os.close(self.fd)
            self.fd = None


class PreviousOutput:
    """The shard's last finished output, kept in the folder `path` beside the declared one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self, keys: dict[str, str]) -> dict[str, dict]:
        """Its rows whose request is the one of `keys` (same prompt, seed and shared
        fields), as records like the checkpoint's, by row id."""
        rows, fields = self.path / PREVIOUS_ROWS, self.path / PREVIOUS_FIELDS
        try:
            shared = io.read_json(fields)["request_fields"]
            df = pl.read_parquet(rows, columns=["id", "prompt", *RESULT_SCHEMA])
        except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
            return {}  # none yet, or unreadable: nothing to reuse
        records = {}
        for row in df.iter_rows(named=True):
            key = keys.get(row["id"])
            if key is not None and key == key_of(row["prompt"], row["seed"], shared):
                record = {name: row[name] for name in RESULT_SCHEMA}
                records[row["id"]] = {**record, "id": row["id"], "key": key}
        return records

    def save(self, output: str | os.PathLike, fields: dict) -> None:
        """Keep `output` (hard-linked; copied where the file system has no hard links)
        and the request fields its rows share, replacing the previous ones at once."""
        with io.atomic_dir(self.path) as tmp:
            try:
                os.link(output, tmp / PREVIOUS_ROWS)
            except OSError:
                import shutil

                shutil.copyfile(output, tmp / PREVIOUS_ROWS)
            io.write_json({"request_fields": fields}, tmp / PREVIOUS_FIELDS)


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
