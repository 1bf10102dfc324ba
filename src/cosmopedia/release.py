"""Checking a release against its manifest, and publishing it to the Hugging Face Hub.

A release is the dataset folder: data/<family>/<source>/<shard>.parquet, removed_rows.parquet,
manifest.json and README.md (the card). Publishing first checks every file against the
manifest, so a damaged release is never uploaded. The Hub token comes from the
environment (HF_TOKEN) only and is never printed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cosmopedia.errors import CliError
from cosmopedia.hashing import sha256_file
from cosmopedia.io import read_json, write_json

log = logging.getLogger("cosmopedia.release")

TEMP_PREFIX = "."  # atomic writes leave hidden temp files only while a write is under way


def integrity_problems(release_dir: str | os.PathLike, manifest: dict) -> list[str]:
    """Every released file that is missing or differs from the manifest, by name."""
    release_dir = Path(release_dir)
    problems = []
    for entry in manifest["files"]:
        path = release_dir / entry["path"]
        if not path.exists():
            problems.append(f"{entry['path']}: missing")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{entry['path']}: {size} bytes, manifest says {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest")
    return problems


def release_files(release_dir: str | os.PathLike) -> list[tuple[str, int]]:
    root = Path(release_dir)
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(TEMP_PREFIX)
    )


def publish(release_dir: str, repo_id: str | None, private: bool, dry_run: bool) -> dict:
    manifest = read_json(Path(release_dir) / "manifest.json")
    if problems := integrity_problems(release_dir, manifest):
        raise CliError("release does not match its manifest:\n  " + "\n  ".join(problems))
    files = release_files(release_dir)
    receipt = {
        "repo_id": repo_id,
        "dry_run": dry_run or not repo_id,
        "root_sha256": manifest["root_sha256"],
        "files": [{"path": p, "bytes": b} for p, b in files],
        "commit": None,
    }
    total = sum(b for _, b in files)
    target = f"datasets/{repo_id}" if repo_id else "(no publish.repo_id set)"
    if receipt["dry_run"]:
        log.info("dry run: would upload %d files (%d bytes) to %s", len(files), total, target)
        for path, size in files:
            log.info("  %s (%d bytes)", path, size)
        return receipt

    from huggingface_hub import HfApi

    if not os.environ.get("HF_TOKEN"):
        raise CliError("publishing needs a Hub token in the HF_TOKEN environment variable")
    api = HfApi()  # reads HF_TOKEN from the environment; never passed on a command line
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    name, version = manifest["dataset"]["name"], manifest["dataset"]["version"]
    commit = api.upload_folder(
        folder_path=release_dir,
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=f"{name} {version} (manifest {manifest['root_sha256'][:12]})",
        ignore_patterns=[f"{TEMP_PREFIX}*"],
    )
    receipt["commit"] = getattr(commit, "oid", None)
    log.info("uploaded %d files (%d bytes) to %s", len(files), total, target)
    return receipt


def add_arguments(name, parser):
    parser.add_argument("--release", required=True, help="release folder (the dataset folder)")
    parser.add_argument("--repo-id", default=None, help="Hub dataset repo, e.g. org/name")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be uploaded")
    parser.add_argument("--receipt", default=None, help="write what was (or would be) uploaded")


def main(args) -> int:
    receipt = publish(args.release, args.repo_id, args.private, args.dry_run)
    if args.receipt:
        write_json(receipt, args.receipt)
    return 0
