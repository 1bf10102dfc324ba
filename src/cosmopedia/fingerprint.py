"""Content fingerprints of seed files, cached by (size, mtime) so planning stays cheap.

Snakemake reruns a job when an input is newer than its output, and only for files under
1 MB does it check whether the content really changed. Seed files are large, and
re-downloading or copying them changes their mtime but not their content. The ingest rule
therefore ignores seed mtimes (`ancient`) and takes the file's sha256 as a param: a seed
shard is re-ingested exactly when its bytes change. Hashes are cached in a small JSON file
keyed by path, size and mtime, so a file is hashed again only after it was touched.
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

    def sha256(self, file: str) -> str:
        stat = os.stat(file)
        entry = self.entries.get(file)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        digest = sha256_file(file)
        self.entries[file] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        self.changed = True
        return digest

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
