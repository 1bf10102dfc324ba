"""The checkpoint of a generate job: every finished row, at once, beside the output.

One write per row, fsync every `checkpoint_every`, keyed by a hash of everything that
determines the row's request (`requests.request_key`), so a killed job resumes without
re-sending finished rows: only the requests in flight are lost. The file lives outside the
declared output (Snakemake deletes those of a failed job) and is deleted once the output
is written.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from cosmopedia import io
from cosmopedia.generation.requests import RESULT_SCHEMA


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
        """Reusable records by row id: key still matches, and not a transient failure.

        The file is then rewritten with just those records, which drops stale lines and a
        line truncated by a kill, so that appending starts on a clean line.
        """
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
                        and not record.get("transient")
                    ):
                        records[record["id"]] = record
        with io.atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in records.values():
                f.write(_json_line(record))
        return records

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


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
