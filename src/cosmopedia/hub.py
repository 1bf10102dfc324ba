"""Seed sources on the Hugging Face Hub: shards planned from the config, rows read by ingest.

A Hub source names its dataset, a pinned revision and the explicit list of its data files
(one file = one shard, or one per row range with rows_per_shard: their row counts,
recorded by `cosmopedia lock`, are in the config too). Planning only turns that list into
shard references (`hf://datasets/<repo_id>@<revision>/<path>`), so a dry-run never touches
the network; only the ingest job of a shard streams that one file (or its range) through
`datasets.load_dataset`.
Any failure to reach or read the file becomes one error naming the source, the
repository, the revision and the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import quote, unquote

PREFIX = "hf://datasets/"


class HubError(RuntimeError):
    """A Hub dataset file could not be reached or read."""


def shard_ref(repo_id: str, revision: str, path: str) -> str:
    """Reference of one data file at one revision (the revision is %-quoted: it may hold /)."""
    return f"{PREFIX}{repo_id}@{quote(revision, safe='')}/{path.lstrip('/')}"


def is_ref(value: str) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_ref(ref: str) -> tuple[str, str, str]:
    """(repo_id, revision, path) of a reference made by `shard_ref`."""
    if not is_ref(ref):
        raise ValueError(f"not a Hub shard reference: {ref!r}")
    repo_id, sep, rest = ref[len(PREFIX) :].partition("@")
    revision, sep2, path = rest.partition("/")
    if not (sep and sep2 and repo_id and revision and path):
        raise ValueError(f"malformed Hub shard reference: {ref!r}")
    return repo_id, unquote(revision), path


def shard_refs(spec: dict) -> list[str]:
    """The shard references of a source's `hub` block, in config order (no network)."""
    return [shard_ref(spec["repo_id"], spec["revision"], path) for path in spec["data_files"]]


def describe(source: str, repo_id: str, revision: str, path: str) -> str:
    return f"sources.{source}: Hub dataset {repo_id} at revision {revision}, file {path}"


def iter_rows(
    source: str,
    repo_id: str,
    revision: str,
    path: str,
    config_name: str | None = None,
    split: str = "train",
    start: int = 0,
    stop: int | None = None,
) -> Iterator[dict]:
    """Stream the rows of one data file of a Hub dataset, as dicts, in file order; with
    `start`/`stop` only rows [start, stop) (a row range, sources.<name>.rows_per_shard).

    A range is streamed with `skip` and `take`: the rows before it are read but skipped as
    Arrow tables (no Python rows made) and reading ends after it, so a range job reads the
    file up to the end of its range only.

    `repo_id` may also be a local folder laid out like the dataset repository (how the
    tests exercise this exact call offline). Errors of `datasets`, `huggingface_hub` and
    the network, raised while opening or while streaming, become a `HubError` naming the
    source, the repository, the revision and the file.
    """
    where = describe(source, repo_id, revision, path)
    hint = ""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        hint = " (HF_HUB_OFFLINE is set: Hub sources need network access in their ingest job)"
    try:
        import datasets

        rows = datasets.load_dataset(
            repo_id,
            name=config_name,
            revision=revision,
            data_files=[path],
            split=split,
            streaming=True,
        )
        if start:
            rows = rows.skip(start)
        if stop is not None:
            rows = rows.take(stop - start)
        iterator = iter(rows)
    except Exception as exc:  # any failure to resolve the repo, revision or file
        raise HubError(f"{where}: cannot open: {type(exc).__name__}: {exc}{hint}") from exc
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # network drop, corrupt file, undecodable rows
            raise HubError(f"{where}: cannot read: {type(exc).__name__}: {exc}{hint}") from exc
        yield row
