"""A sealed release: the manifest lists every file, and one check guards verify and publish.

A release is the dataset folder, written whole by the dataset step:

    data/<family>/<source>/<shard>.parquet  manifest `files` (sha256, bytes, rows, tokens)
    README.md (the card), removed_rows.parquet, anything else written there
                                            manifest `other_files` (sha256, bytes)
    manifest.json                           every file above, the roots, config, counts
    SHA256SUMS                              every file but itself, for `sha256sum -c`

root_sha256 is recomputable from the entries (ROOT_FORMULA, also stored in the manifest);
data_root_sha256 is the same over the data files only: the card shows that one, since a
hash that covers the card cannot be printed in it. manifest.json does not list itself.
SHA256SUMS is not in the manifest either: its content follows from the manifest (the
entries plus manifest.json's own sha256), and the check compares it byte for byte.

`check_release` is the one integrity check of `verify --integrity-only`, full `verify`
and `publish` (dry run and upload). It fails on a missing, extra or changed file, on a
root that does not match the entries, on a path that is absolute, has a `..` part or
leads through a symbolic link, on anything that is not a regular file (checked with
lstat before anything is opened: a device or fifo is never read), on a manifest that is
not JSON or has a field of the wrong type (named), and on counts that do not add up.
`publish` uploads exactly the list the check returns. The Hub token comes from the
environment (HF_TOKEN) only and is never printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cosmopedia.errors import CliError
from cosmopedia.hashing import sha256_file, sha256_text
from cosmopedia.io import write_json, write_text

log = logging.getLogger("cosmopedia.release")

MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
REQUIRED_FILES = ("README.md", "removed_rows.parquet")
ROOT_FORMULA = (
    "root_sha256 = sha256 of the UTF-8 lines '<sha256> <bytes> <path>\\n' of every entry of "
    "files and other_files, sorted by path; data_root_sha256 = the same over files only"
)
# Release paths: '/'-separated parts of these characters, none of them '.' or '..'.
PATH_PART = re.compile(r"[A-Za-z0-9_.-]+")
# Released data files: data/<family>/<source>/<shard>.parquet (names as plan.py allows).
DATA_PATH = re.compile(r"data/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)\.parquet")
SHARD_KEY = re.compile(r"[A-Za-z0-9_-]+/[A-Za-z0-9_-]+")  # <source>/<shard>
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the config schema's pattern
SHA256 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------- roots and SHA256SUMS


def root_sha256(entries: list[dict]) -> str:
    """ROOT_FORMULA over `entries` (dicts with path, sha256, bytes)."""
    ordered = sorted(entries, key=lambda e: e["path"])
    text = "".join(f"{e['sha256']} {e['bytes']} {e['path']}\n" for e in ordered)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checksums_text(entries: list[dict], manifest_sha256: str) -> str:
    """SHA256SUMS: `<sha256>  <path>` of every entry and of manifest.json, sorted by path."""
    pairs = [(e["path"], e["sha256"]) for e in entries] + [(MANIFEST, manifest_sha256)]
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(pairs))


def seal(release_dir: str | os.PathLike, manifest: dict) -> dict:
    """Finish a release folder: every file written there goes into the manifest (data files
    as `files` already are, the others as `other_files`), with the roots; then manifest.json
    and SHA256SUMS are written. Returns the sealed manifest."""
    root = Path(release_dir)
    data = {entry["path"]: entry for entry in manifest["files"]}
    other = []
    found = walk(root)
    for rel, st in sorted(found.items()):
        # path_problem also refuses manifest.json and SHA256SUMS: sealing writes them.
        problem = path_problem(rel) or (None if stat.S_ISREG(st.st_mode) else kind_of(st))
        if problem:
            raise CliError(f"{root / rel}: cannot be released: {problem}")
        if rel not in data:
            other.append({"path": rel, "sha256": sha256_file(root / rel), "bytes": st.st_size})
    if missing := sorted(set(data) - set(found)):
        raise CliError(f"{root}: data files missing before sealing: {', '.join(missing)}")
    entries = manifest["files"] + other
    sealed = manifest | {
        "other_files": other,
        "root_formula": ROOT_FORMULA,
        "root_sha256": root_sha256(entries),
        "data_root_sha256": root_sha256(manifest["files"]),
    }
    write_json(sealed, root / MANIFEST)
    write_text(checksums_text(entries, sha256_file(root / MANIFEST)), root / CHECKSUMS)
    return sealed


# ---------------------------------------------------------------- the manifest's own fields


def path_problem(path) -> str | None:
    """Why `path` cannot name a file of a release (None: it can)."""
    if not isinstance(path, str):
        return f"expected a string, got {json_type(path)}"
    if path.startswith("/"):
        return f"{short(path)} is an absolute path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"{short(path)} has an empty, '.' or '..' part"
    if not all(PATH_PART.fullmatch(part) for part in parts):
        return f"{short(path)} has characters other than A-Z a-z 0-9 _ . - /"
    if path in (MANIFEST, CHECKSUMS):
        return f"{path!r} is not an entry (the manifest does not list itself or {CHECKSUMS})"
    return None


def short(value) -> str:
    """repr of a manifest value for a message, cut (a hostile manifest may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object"
    )


KINDS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "sha256": lambda v: isinstance(v, str) and SHA256.fullmatch(v) is not None,
    "name": lambda v: isinstance(v, str) and DATASET_NAME.fullmatch(v) is not None,
}
KIND_NAMES = {
    "count": "an integer >= 0",
    "sha256": "64 lowercase hex digits",
    "name": "a name matching [A-Za-z0-9][A-Za-z0-9._-]*",
}


class Fields:
    """Typed access to manifest fields; every problem names the field."""

    def __init__(self):
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{MANIFEST}: {where}: {message}")

    def get(self, obj: dict, key: str, kind: str, where: str):
        if key not in obj:
            self.add(where, "missing")
            return None
        value = obj[key]
        if not KINDS[kind](value):
            want = KIND_NAMES.get(kind, f"an {kind}" if kind[0] in "ao" else f"a {kind}")
            shown = short(value) if isinstance(value, str | int | float) else json_type(value)
            self.add(where, f"expected {want}, got {shown}")
            return None
        return value

    def counts(self, obj: dict, where: str) -> dict[str, int]:
        """An object of name -> count."""
        for key, value in obj.items():
            if not KINDS["count"](value):
                self.add(f"{where}.{key}", f"expected an integer >= 0, got {short(value)}")
        return obj


def manifest_problems(manifest) -> list[str]:
    """Structure, types and internal consistency of a manifest, without reading any file:
    every field verify or publish uses, every name that becomes a path, the roots, the
    config hash and the count totals. Problems name the field."""
    return validate_manifest(manifest)[0]


def validate_manifest(manifest) -> tuple[list[str], bool]:
    """manifest_problems, and whether its entries (files, other_files) are sound: lists of
    safe paths with sha256 and bytes, which the files on disk can be checked against."""
    if not isinstance(manifest, dict):
        return [f"{MANIFEST}: expected a JSON object, got {json_type(manifest)}"], False
    f = Fields()
    dataset = f.get(manifest, "dataset", "object", "dataset") or {}
    name = f.get(dataset, "name", "name", "dataset.name") if dataset else None
    version = f.get(dataset, "version", "name", "dataset.version") if dataset else None
    entries = []
    paths: set[str] = set()
    before = len(f.problems)
    for key in ("files", "other_files"):
        items = f.get(manifest, key, "array", key) or []
        if key == "files" and not items and isinstance(manifest.get(key), list):
            f.add(key, "empty: a release has data files")
        for i, entry in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(entry, dict):
                f.add(where, f"expected an object, got {json_type(entry)}")
                continue
            ok = True
            path = entry.get("path")
            if problem := (path_problem(path) if "path" in entry else "missing"):
                f.add(f"{where}.path", problem)
                ok = False
            elif path in paths:
                f.add(f"{where}.path", f"{path!r} is listed twice")
                ok = False
            elif (key == "files") != bool(DATA_PATH.fullmatch(path)):
                f.add(
                    f"{where}.path",
                    f"{path!r}: data files, and only they, are data/<config>/<source>/<shard>"
                    ".parquet in `files`",
                )
                ok = False
            kinds = {"sha256": "sha256", "bytes": "count"}
            if key == "files":
                kinds |= {"config": "string", "rows": "count", "tokens": "count"}
            for field_name, kind in kinds.items():
                ok &= f.get(entry, field_name, kind, f"{where}.{field_name}") is not None
            if ok and key == "files" and DATA_PATH.fullmatch(path).group(1) != entry["config"]:
                f.add(f"{where}.config", f"{short(entry['config'])} is not the folder of {path!r}")
                ok = False
            if ok:
                paths.add(path)
                entries.append((key, entry))
    sound = len(f.problems) == before or all(
        p.startswith(f"{MANIFEST}: files: empty") for p in f.problems[before:]
    )
    for required in REQUIRED_FILES:
        if required not in paths and "other_files" in manifest:
            f.add("other_files", f"no entry for {required} (every release has one)")

    if f.get(manifest, "root_formula", "string", "root_formula") not in (None, ROOT_FORMULA):
        f.add("root_formula", "not the formula this version of cosmopedia computes")
    root = f.get(manifest, "root_sha256", "sha256", "root_sha256")
    data_root = f.get(manifest, "data_root_sha256", "sha256", "data_root_sha256")
    files = [e for key, e in entries if key == "files"]
    complete = not f.problems
    if complete and root != root_sha256([e for _, e in entries]):
        f.add("root_sha256", f"{root} does not match its entries ({ROOT_FORMULA})")
    if complete and data_root != root_sha256(files):
        f.add("data_root_sha256", f"{data_root} does not match the entries of files")

    config = f.get(manifest, "config", "object", "config")
    config_sha = f.get(manifest, "config_sha256", "sha256", "config_sha256")
    if config is not None:
        from cosmopedia.settings import canonical_json

        if config_sha is not None and sha256_text(canonical_json(config)) != config_sha:
            f.add("config_sha256", "does not match config (sha256 of its canonical JSON)")
        named = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
        if (named.get("name"), named.get("version")) != (name, version):
            f.add("config.dataset", "name and version differ from the manifest's dataset")

    totals = f.get(manifest, "totals", "object", "totals")
    if totals is not None and complete:
        for key in ("rows", "tokens"):
            value = f.get(totals, key, "count", f"totals.{key}")
            if value is not None and value != sum(e[key] for e in files):
                f.add(f"totals.{key}", f"{value} is not the sum over files")

    shards = {"/".join(DATA_PATH.fullmatch(e["path"]).group(2, 3)) for e in files}
    stage_rows = f.get(manifest, "stage_rows", "object", "stage_rows")
    by_shard = total = None
    if stage_rows is not None:
        by_shard = f.get(stage_rows, "by_shard", "object", "stage_rows.by_shard")
        total = f.get(stage_rows, "total", "object", "stage_rows.total")
    generation = f.get(manifest, "generation", "object", "generation")
    for where, keyed in (("stage_rows.by_shard", by_shard), ("generation", generation)):
        for key, value in (keyed or {}).items():
            if not SHARD_KEY.fullmatch(key):
                f.add(where, f"{short(key)} is not <source>/<shard> (names of [A-Za-z0-9_-])")
            elif not isinstance(value, dict):
                f.add(f"{where}.{key}", f"expected an object, got {json_type(value)}")
            elif where == "stage_rows.by_shard":
                f.counts(value, f"{where}.{key}")
        if keyed is not None and complete and set(keyed) != shards:
            f.add(where, "its shards are not the shards of the data files")
    if total is not None and by_shard and not f.problems:
        stages = set(total) | {s for counts in by_shard.values() for s in counts}
        for stage in sorted(stages):
            summed = sum(counts.get(stage, 0) for counts in by_shard.values())
            if total.get(stage) != summed:
                f.add(
                    f"stage_rows.total.{stage}", f"{total.get(stage)!r}, the shards sum to {summed}"
                )
    removed = f.get(manifest, "removed", "object", "removed")
    if removed is not None:
        f.counts(removed, "removed")
    return f.problems, sound


# ---------------------------------------------------------------- the files on disk


def walk(root: Path) -> dict[str, os.stat_result]:
    """lstat of everything but folders under `root`, by relative path; only real folders
    are entered (a symbolic link is listed, never followed)."""
    found: dict[str, os.stat_result] = {}
    folders = [""]
    while folders:
        rel_dir = folders.pop()
        with os.scandir(root / rel_dir) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    folders.append(rel)
                else:
                    found[rel] = st
    return found


def kind_of(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file, opened so that nothing else is ever read: no symbolic
    link followed, and a fifo or device (should it replace the file after lstat) refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        return f.read()


def sha256_regular(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def missing_reason(root: Path, rel: str) -> str:
    """Why an entry was not found inside the release: absent, or behind a link or a file."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return "missing"
        if not stat.S_ISDIR(st.st_mode):
            return f"missing: {current.relative_to(root)} is {kind_of(st)}, not a folder"
    return "missing"


@dataclass
class Integrity:
    """What check_release found. `files`: the sealed list, (path, bytes), sorted, with
    manifest.json and SHA256SUMS: what publish uploads. `usable`: the manifest's fields are
    sound, so verify may rebuild from it."""

    problems: list[str] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)
    manifest: dict | None = None
    usable: bool = False

    def checked(self, where) -> str:
        """What was checked, for messages."""
        if not self.files:
            return f"{MANIFEST} in {where} (its entries are unsound: no file was checked)"
        return (
            f"integrity of {len(self.files)} files checked in {where} "
            "(sha256 and bytes, roots, SHA256SUMS, row counts)"
        )


def load_manifest_bytes(data: bytes) -> tuple[object, str | None]:
    try:
        return json.loads(data.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        return None, f"{MANIFEST}: not UTF-8 ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return None, f"{MANIFEST}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"


def check_release(release_dir: str | os.PathLike) -> Integrity:
    """Check a release folder against its manifest.json (see the module docstring)."""
    root = Path(release_dir)
    if not root.is_dir():
        return Integrity([f"{root}: not a release folder"])
    try:
        st = os.lstat(root / MANIFEST)
    except FileNotFoundError:
        return Integrity([f"{MANIFEST}: missing in {root}"])
    if not stat.S_ISREG(st.st_mode):
        return Integrity([f"{MANIFEST}: {kind_of(st)}, not a regular file; not read"])
    try:
        manifest_bytes = read_regular(root / MANIFEST)
    except OSError as exc:
        return Integrity([f"{MANIFEST}: cannot be read: {exc}"])
    manifest, problem = load_manifest_bytes(manifest_bytes)
    if problem:
        return Integrity([problem])
    problems, sound = validate_manifest(manifest)
    result = Integrity(problems, manifest=manifest, usable=not problems)
    if not sound:  # no list of safe paths to check the files against
        return result
    entries = manifest["files"] + manifest["other_files"]
    found = walk(root)
    listed = {e["path"] for e in entries} | {MANIFEST, CHECKSUMS}
    for rel in sorted(set(found) - listed):
        what = kind_of(found[rel])
        problems.append(f"{rel}: not in the manifest ({what}; it would be released unchecked)")
    for entry in sorted(entries, key=lambda e: e["path"]):
        if problem := entry_problem(root, entry, found.get(entry["path"])):
            problems.append(f"{entry['path']}: {problem}")

    expected = checksums_text(entries, hashlib.sha256(manifest_bytes).hexdigest())
    checksums_size = len(expected.encode())
    if CHECKSUMS not in found:
        problems.append(f"{CHECKSUMS}: missing")
    elif not stat.S_ISREG(found[CHECKSUMS].st_mode):
        problems.append(f"{CHECKSUMS}: {kind_of(found[CHECKSUMS])}, not a regular file; not read")
    else:
        try:
            actual = read_regular(root / CHECKSUMS).decode("utf-8", errors="replace")
        except OSError as exc:
            actual = f"cannot be read: {exc}"
        if actual != expected:
            differ = sorted(set(actual.splitlines()) ^ set(expected.splitlines()))
            paths = sorted({line.split("  ", 1)[-1] for line in differ})
            problems.append(
                f"{CHECKSUMS}: does not match the manifest and manifest.json "
                f"(lines of {', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''})"
            )
    if not problems:
        problems += content_problems(root, manifest)
    result.files = sorted(
        [(e["path"], e["bytes"]) for e in entries]
        + [(MANIFEST, len(manifest_bytes)), (CHECKSUMS, checksums_size)]
    )
    return result


def entry_problem(root: Path, entry: dict, st: os.stat_result | None) -> str | None:
    rel = entry["path"]
    if st is None:
        return missing_reason(root, rel)
    if not stat.S_ISREG(st.st_mode):
        return f"{kind_of(st)}, not a regular file; not read"
    if st.st_size != entry["bytes"]:
        return f"{st.st_size} bytes, the manifest says {entry['bytes']}"
    try:
        digest = sha256_regular(root / rel)
    except OSError as exc:
        return f"cannot be read: {exc}"
    if digest != entry["sha256"]:
        return "sha256 differs from the manifest"
    return None


def content_problems(root: Path, manifest: dict) -> list[str]:
    """What the (hash-checked) files say against the manifest's counts: rows and tokens of
    every data file, the removed rows by step, rows in = rows kept + rows removed."""
    import polars as pl

    problems = []
    by_shard = manifest["stage_rows"]["by_shard"]
    for entry in manifest["files"]:
        try:
            rows, tokens = (
                pl.scan_parquet(root / entry["path"])
                .select(pl.len(), pl.col("text_token_length").sum())
                .collect()
                .row(0)
            )
        except (OSError, pl.exceptions.PolarsError) as exc:
            problems.append(f"{entry['path']}: cannot be read as the dataset's Parquet: {exc}")
            continue
        if (rows, int(tokens or 0)) != (entry["rows"], entry["tokens"]):
            problems.append(
                f"{entry['path']}: {rows} rows, {tokens} tokens; the manifest says "
                f"{entry['rows']} rows, {entry['tokens']} tokens"
            )
        key = "/".join(DATA_PATH.fullmatch(entry["path"]).group(2, 3))
        if by_shard[key].get("decontam") != rows:
            problems.append(f"{MANIFEST}: stage_rows.by_shard.{key}.decontam is not {rows}")
    try:
        removed = pl.read_parquet(root / "removed_rows.parquet")
        by_step = removed.group_by("stage", "reason").len().rows()
        per_shard = removed_by_shard(removed)
    except (OSError, pl.exceptions.PolarsError) as exc:
        return [*problems, f"removed_rows.parquet: cannot be read: {exc}"]
    if {f"{stage}/{reason}": n for stage, reason, n in by_step} != manifest["removed"]:
        problems.append(f"{MANIFEST}: removed: not the rows of removed_rows.parquet by step")
    problems += [
        f"{MANIFEST}: stage_rows: {p} (removed_rows.parquet)"
        for p in count_problems(by_shard, per_shard)
    ]
    return problems


# ---------------------------------------------------------------- publish


def upload_operations(release_dir: str | os.PathLike, files: list[tuple[str, int]]) -> list:
    """One upload per file of the sealed list, and nothing else."""
    from huggingface_hub import CommitOperationAdd

    return [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(Path(release_dir) / path))
        for path, _ in files
    ]


def publish(release_dir: str, repo_id: str | None, private: bool, dry_run: bool) -> dict:
    result = check_release(release_dir)
    if result.problems:
        raise CliError(
            f"{release_dir} does not match its manifest ({len(result.problems)} problems, "
            "nothing uploaded)\n  " + "\n  ".join(result.problems)
        )
    manifest, files = result.manifest, result.files
    receipt = {
        "repo_id": repo_id,
        "dry_run": dry_run or not repo_id,
        "root_sha256": manifest["root_sha256"],
        "files": [{"path": p, "bytes": b} for p, b in files],
        "commit": None,
    }
    total = sum(b for _, b in files)
    target = f"datasets/{repo_id}" if repo_id else "(no publish.repo_id set)"
    log.info("%s", result.checked(release_dir))
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
    commit = api.create_commit(
        repo_id=repo_id,
        repo_type="dataset",
        operations=upload_operations(release_dir, files),
        commit_message=f"{name} {version} (manifest root {manifest['root_sha256'][:12]})",
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


# --- counts that add up: rows in = rows kept + rows removed, at every step ----------------

# (stage, the next stage, the step that removes rows between them; None: it removes none;
# FAN_OUT: the step makes rows of another unit). The prompts step turns a seed row into
# one prompt, one per style (`fan_out: all`) or, for an OpenStax book, one per unit and
# audience: from prompts on, rows are prompts, and the identity holds again between steps.
FAN_OUT = "fan-out"
STAGE_FLOW = [
    ("read", "seeds", "ingest"),
    ("seeds", "prompts", FAN_OUT),
    ("prompts", "generations", None),
    ("generations", "clean", "clean"),
    ("clean", "dedup", "dedup"),
    ("dedup", "decontam", "decontaminate"),
]


def count_problems(by_shard: dict[str, dict[str, int]], removed: dict[tuple, int]) -> list[str]:
    """Where rows reaching a stage are not the rows it keeps plus the rows it removed.

    `removed`: (shard key, step) -> removed rows. Shared with the release check.
    """
    problems = []
    for key, counts in sorted(by_shard.items()):
        for stage, after, step in STAGE_FLOW:
            gone = removed.get((key, step), 0) if step else 0
            if counts.get(stage) is None or counts.get(after) is None:
                problems.append(f"shard {key}: no row count of step {stage} or {after}")
            elif step != FAN_OUT and counts[stage] != counts[after] + gone:
                problems.append(
                    f"shard {key}: {counts[stage]} rows at {stage}, {counts[after]} at {after}, "
                    f"but {gone} removed by step {step or '(none)'}"
                )
    return problems


def removed_by_shard(removed_df) -> dict[tuple, int]:
    """(source/shard, stage) -> rows removed there, from the removed-rows table."""
    counts = removed_df.group_by("source", "shard", "stage").len().rows()
    return {(f"{source}/{shard}", stage): n for source, shard, stage, n in counts}
