"""Content fingerprints of seed files, cached by (size, mtime) so planning stays cheap.

Snakemake reruns a job when an input is newer than its output, and only for files under
1 MB does it check whether the content really changed. Seed files are large, and
re-downloading or copying them changes their mtime but not their content. The ingest rule
therefore ignores seed mtimes (`ancient`) and takes the file's sha256 as a param: a seed
shard is re-ingested exactly when its bytes change. Hashes are cached in a small JSON file
keyed by path, size and mtime, so a file is hashed again only after it was touched.

A source split into row ranges (`rows_per_shard`, cosmopedia.rowranges) needs each file's
row count and a digest per range instead: cached the same way, per `rows_per_shard`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cosmopedia.hashing import sha256_file
from cosmopedia.io import write_json


class FingerprintCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache only costs re-hashing

    def _entry(self, file: str) -> dict:
        """The file's entry, emptied (but for size and mtime) when the file changed."""
        stat = os.stat(file)
        entry = self.entries.get(file)
        if not (entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns):
            entry = self.entries[file] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return entry

    def sha256(self, file: str) -> str:
        entry = self._entry(file)
        if "sha256" not in entry:
            entry["sha256"] = sha256_file(file)
            self.changed = True
        return entry["sha256"]

    def rows(self, file: str) -> int:
        """The file's rows (Parquet footer, non-blank JSONL lines)."""
        from cosmopedia import rowranges

        entry = self._entry(file)
        if "rows" not in entry:
            entry["rows"] = rowranges.count_rows(file)
            self.changed = True
        return entry["rows"]

    def ranges(self, file: str, rows_per_shard: int) -> tuple[int, list[str]]:
        """(rows, digest of each range of `rows_per_shard` rows) of the file."""
        from cosmopedia import rowranges

        entry = self._entry(file)
        by_size = entry.setdefault("ranges", {})
        if str(rows_per_shard) not in by_size:
            entry["rows"], by_size[str(rows_per_shard)] = rowranges.scan(file, rows_per_shard)
            self.changed = True
        return entry["rows"], by_size[str(rows_per_shard)]

    def save(self) -> None:
        if self.changed:
            # Every Snakemake process (each Slurm job too) plans and may save at once:
            # never remove another process's temporary file.
            write_json(self.entries, self.path, leftovers=False)
            self.changed = False


def fingerprints(files: list[str], cache_path: str | os.PathLike) -> dict[str, str]:
    """sha256 of each file, reusing cached hashes of files whose size and mtime are unchanged."""
    cache = FingerprintCache(cache_path)
    result = {file: cache.sha256(file) for file in files}
    cache.save()
    return result
