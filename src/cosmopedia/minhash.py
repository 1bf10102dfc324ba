"""MinHash near-duplicate removal: datatrove's four stages, one Snakemake job per task.

    minhash-signature  (one job per shard)   CLEAN.parquet -> SIGDIR/ + STREAM.json
    minhash-buckets    (one job per bucket)  every SIGDIR's bucket_B.sig -> B.dups + B.dups.json
    minhash-cluster    (one job)             all .dups -> REMOVEDIR/{key}.remove + clusters.parquet
    minhash-filter     (one job per shard)   CLEAN.parquet + {key}.remove -> kept + removed rows

The datatrove stages run unchanged (`step.run(...)`, no executor: its completion markers
would turn reruns into silent no-ops). Around them this module guards datatrove's traps:

- A shard's datatrove rank is its index in `shard_order(keys)`; each buckets/cluster job
  stages ONLY its declared inputs as symlinks in a fresh folder, so stale files are never
  read, and the ranks are the same in every job.
- The filter drops doc *positions*: it re-creates the stream with `shard_documents` (the
  same function the signature step used) and refuses to run unless its fingerprint (count,
  sha256 of the ordered ids and of the texts) equals the one recorded in STREAM.json.
- Settings (and the datatrove version) are recorded with every signature and each bucket's
  duplicates; a later step fails, naming the shard or bucket, if any input differs.

A signature directory SIGDIR holds `bucket_{b:03d}.sig` (datatrove's sorted records),
`stream.json` (same content as STREAM.json) and `ids.parquet` (doc_idx, id in stream
order: the cluster step maps datatrove's doc indices back to ids with it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np
import polars as pl

from cosmopedia.cli import CliError, load_settings
from cosmopedia.io import read_json, read_parquet, write_json, write_parquet

log = logging.getLogger("cosmopedia.minhash")

DEFAULT_SETTINGS = {
    "n_grams": 5,
    "num_buckets": 14,
    "hashes_per_bucket": 8,
    "seed": 1,
    "precision": 64,
    "tokenizer": "spacy",
}
TOKENIZERS = ("spacy", "whitespace")
STREAM_FORMAT = "cosmopedia.minhash.stream/1"
DUPS_FORMAT = "cosmopedia.minhash.dups/1"
REMOVED_REASON = "minhash_duplicate"
_KEY_RE = re.compile(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*")


# ---------------------------------------------------------------- settings


def parse_settings(raw: dict) -> dict:
    """Defaults filled in and values checked: the canonical form recorded beside every output."""
    unknown = sorted(set(raw) - set(DEFAULT_SETTINGS))
    if unknown:
        raise CliError(f"unknown minhash settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
    settings = DEFAULT_SETTINGS | raw
    for name in ("n_grams", "num_buckets", "hashes_per_bucket", "seed"):
        value = settings[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < (name != "seed"):
            raise CliError(f"minhash setting {name} must be a positive integer, got {value!r}")
    if settings["precision"] not in (32, 64):
        raise CliError(f"minhash setting precision must be 32 or 64, got {settings['precision']!r}")
    if settings["tokenizer"] not in TOKENIZERS:
        raise CliError(f"minhash setting tokenizer must be one of {TOKENIZERS}")
    return settings


def identity(settings: dict) -> dict:
    """What must be equal for signatures to be comparable: settings + datatrove's version."""
    return {"settings": settings, "datatrove": version("datatrove")}


def minhash_config(settings: dict):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(
        n_grams=settings["n_grams"],
        num_buckets=settings["num_buckets"],
        hashes_per_bucket=settings["hashes_per_bucket"],
        seed=settings["seed"],
        hash_config=HashConfig(precision=settings["precision"]),
    )


def _whitespace_tokenizer_class():
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceSplitTokenizer(WordTokenizer):
        """str.split words: ~7x faster than spaCy, but gives different signatures."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [line.strip() for line in text.splitlines() if line.strip()]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", text)]

    return WhitespaceSplitTokenizer


_tokenizers: dict[str, object] = {}


def word_tokenizer(name: str):
    """The `language` argument of MinhashDedupSignature for a `tokenizer` setting."""
    if name == "spacy":
        from datatrove.utils.typeshelper import Languages

        return Languages.english  # datatrove's default: spaCy's blank English tokenizer
    # One instance per process: datatrove caches tokenizers by argument.
    if name not in _tokenizers:
        _tokenizers[name] = _whitespace_tokenizer_class()("en")
    return _tokenizers[name]


def check_identity(found: dict, expected: dict, what: str) -> None:
    """Fail, naming `what` and the differing values, unless `found` matches `expected`."""
    if found.get("datatrove") != expected["datatrove"]:
        raise CliError(
            f"{what} was made with datatrove {found.get('datatrove')}, this run uses "
            f"{expected['datatrove']}; rerun the MinHash steps from minhash-signature"
        )
    got, want = found.get("settings") or {}, expected["settings"]
    diff = {
        k: (got.get(k), want[k]) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)
    }
    if diff:
        detail = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in diff.items())
        raise CliError(
            f"{what} was made with different minhash settings: {detail}; "
            "signatures made with different settings or tokenizers cannot be mixed"
        )


# ---------------------------------------------------------------- shards and streams


def shard_order(keys: Iterable[str]) -> list[str]:
    """Shard keys in rank order. The ONE definition used by the buckets and cluster steps."""
    keys = list(keys)
    for key in keys:
        if not _KEY_RE.fullmatch(key) or any(p in (".", "..") for p in key.split("/")):
            raise CliError(
                f"bad shard key {key!r}: expected 'source/shard' (letters, digits, _.+-)"
            )
    if len(set(keys)) != len(keys):
        raise CliError("duplicate shard keys given")
    return sorted(keys)


def read_shard(path: str | os.PathLike) -> pl.DataFrame:
    df = read_parquet(path)
    for column in ("id", "text"):
        if column not in df.columns:
            raise CliError(f"{path}: missing column {column!r}")
        if df[column].null_count():
            raise CliError(f"{path}: column {column!r} has null values")
    return df


def shard_documents(df: pl.DataFrame) -> Iterator:
    """THE document stream of a shard (file order); doc_idx in datatrove = position here.

    Both the signature and the filter step feed datatrove from this function; `row` in the
    metadata lets the filter map the documents it keeps back to full rows.
    """
    from datatrove.data import Document

    for row, (doc_id, text) in enumerate(zip(df["id"], df["text"], strict=True)):
        yield Document(text=text, id=doc_id, metadata={"row": row})


class StreamHasher:
    """Fingerprint of a document stream, computed while datatrove consumes it."""

    def __init__(self) -> None:
        self.n_docs = 0
        self.ids: list[str] = []
        self._ids = hashlib.sha256()
        self._texts = hashlib.sha256()

    def wrap(self, docs: Iterable) -> Iterator:
        for doc in docs:
            # Length-prefixed, so no separator character can make two streams collide.
            for digest, value in ((self._ids, doc.id), (self._texts, doc.text)):
                data = value.encode("utf-8")
                digest.update(struct.pack("<Q", len(data)))
                digest.update(data)
            self.ids.append(doc.id)
            self.n_docs += 1
            yield doc

    def fingerprint(self) -> dict:
        return {
            "n_docs": self.n_docs,
            "ids_sha256": self._ids.hexdigest(),
            "texts_sha256": self._texts.hexdigest(),
        }


def stream_fingerprint(docs: Iterable) -> dict:
    hasher = StreamHasher()
    for _ in hasher.wrap(docs):
        pass
    return hasher.fingerprint()


def read_stream(path: str | os.PathLike, what: str) -> dict:
    try:
        stream = read_json(path)
    except FileNotFoundError as exc:
        raise CliError(f"{what}: stream file {path} is missing") from exc
    if stream.get("format") != STREAM_FORMAT:
        raise CliError(f"{what}: {path} is not a {STREAM_FORMAT} file")
    return stream


def inputs_digest(streams: dict[str, dict]) -> str:
    """Which shards, in which ranks, with which streams: ties .dups files to their inputs."""
    digest = hashlib.sha256()
    for key in shard_order(streams):
        s = streams[key]
        digest.update(f"{key}\0{s['n_docs']}\0{s['ids_sha256']}\0{s['texts_sha256']}\n".encode())
    return digest.hexdigest()


def parse_key_values(pairs: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise CliError(f"{flag} expects KEY=PATH, got {pair!r}")
        if key in out:
            raise CliError(f"{flag}: shard key {key!r} given twice")
        out[key] = value
    shard_order(out)
    return out


def load_signature_streams(signatures: dict[str, str], expected: dict) -> dict[str, dict]:
    """Each SIGDIR's stream.json, checked against this run's settings."""
    streams = {}
    for key in shard_order(signatures):
        stream = read_stream(Path(signatures[key]) / "stream.json", f"shard {key}")
        check_identity(stream, expected, f"signatures of shard {key} ({signatures[key]})")
        streams[key] = stream
    return streams


# ---------------------------------------------------------------- file helpers


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp dir beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
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


@contextlib.contextmanager
def scratch_dir(beside: str | os.PathLike, step: str) -> Iterator[Path]:
    """datatrove's working folder, on the output's filesystem so results move by rename."""
    parent = Path(beside).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{step}.", dir=parent) as tmp:
        yield Path(tmp)


def _link(target: str | os.PathLike, link: Path) -> None:
    target = Path(target)
    if not target.is_file():
        raise CliError(f"input file {target} is missing")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def _uint32s(path: Path) -> np.ndarray:
    data = path.read_bytes() if path.exists() else b""
    if len(data) % 4:
        raise CliError(f"{path}: size {len(data)} is not a multiple of 4 (truncated?)")
    return np.frombuffer(data, dtype="<u4")


# ---------------------------------------------------------------- step 1: signatures


def signature(input_path, output_dir, stream_path, settings: dict) -> dict:
    """MinHash signatures of one shard -> SIGDIR; returns the stream record."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    settings = parse_settings(settings)
    nb = settings["num_buckets"]
    df = read_shard(input_path)
    hasher = StreamHasher()
    with scratch_dir(output_dir, "minhash-signature") as work, atomic_dir(output_dir) as out:
        step = MinhashDedupSignature(
            output_folder=str(work),
            config=minhash_config(settings),
            language=word_tokenizer(settings["tokenizer"]),
        )
        step.run(hasher.wrap(shard_documents(df)), rank=0, world_size=1)
        for b in range(nb):
            produced = work / f"bucket_{b:03d}" / "00000.minhash.sig"
            if produced.exists():
                os.replace(produced, out / f"bucket_{b:03d}.sig")
            else:  # no document at all: datatrove may not create the files
                (out / f"bucket_{b:03d}.sig").write_bytes(b"")
        # datatrove's record: hashes_per_bucket hashes + the uint32 doc index.
        fmt = f"<{settings['hashes_per_bucket']}{step.config.hash_config.struct_format}I"
        record = struct.calcsize(fmt)
        stream = {
            "format": STREAM_FORMAT,
            **hasher.fingerprint(),
            "n_signed": (out / "bucket_000.sig").stat().st_size // record,
            **identity(settings),
        }
        ids = pl.DataFrame(
            {"doc_idx": np.arange(len(hasher.ids), dtype=np.uint32), "id": hasher.ids},
            schema={"doc_idx": pl.UInt32, "id": pl.String},
        )
        write_parquet(ids, out / "ids.parquet", sort_by=None)
        write_json(stream, out / "stream.json")
    write_json(stream, stream_path)
    log.info(
        "%s: %d docs, %d with a signature (docs under n_grams words get none)",
        input_path,
        stream["n_docs"],
        stream["n_signed"],
    )
    return stream


# ---------------------------------------------------------------- step 2: buckets


def buckets(bucket: int, signatures: dict[str, str], output, settings: dict) -> dict:
    """Duplicate pairs of one bucket over the declared shards -> OUTPUT + OUTPUT.json."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

    settings = parse_settings(settings)
    expected = identity(settings)
    nb = settings["num_buckets"]
    if not 0 <= bucket < nb:
        raise CliError(f"--bucket {bucket} is out of range 0..{nb - 1}")
    keys = shard_order(signatures)
    streams = load_signature_streams(signatures, expected)
    output = Path(output)
    with scratch_dir(output, "minhash-buckets") as work:
        for rank, key in enumerate(keys):
            _link(
                Path(signatures[key]) / f"bucket_{bucket:03d}.sig",
                work / "sigs" / f"bucket_{bucket:03d}" / f"{rank:05d}.minhash.sig",
            )
        (work / "sigs" / f"bucket_{bucket:03d}").mkdir(parents=True, exist_ok=True)
        step = MinhashDedupBuckets(
            input_folder=str(work / "sigs"),
            output_folder=str(work / "dups"),
            config=minhash_config(settings),
        )
        step.run(None, rank=bucket, world_size=nb)
        produced = work / "dups" / f"{bucket:05d}_00.dups"
        n_pairs = produced.stat().st_size // 16
        manifest = {
            "format": DUPS_FORMAT,
            "bucket": bucket,
            "n_shards": len(keys),
            "inputs_sha256": inputs_digest(streams),
            "n_pairs": n_pairs,
            **expected,
        }
        write_json(manifest, dups_manifest_path(output))
        os.replace(produced, output)
    log.info("bucket %d: %d duplicate pairs over %d shards", bucket, n_pairs, len(keys))
    return manifest


def dups_manifest_path(dups) -> Path:
    return Path(f"{dups}.json")


# ---------------------------------------------------------------- step 3: cluster


def cluster(dups: list[str], signatures: dict[str, str], remove_dir, clusters, settings: dict):
    """All buckets' pairs -> one `{key}.remove` per shard (empty if none) + clusters table."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

    settings = parse_settings(settings)
    expected = identity(settings)
    nb = settings["num_buckets"]
    keys = shard_order(signatures)
    streams = load_signature_streams(signatures, expected)
    digest = inputs_digest(streams)
    by_bucket: dict[int, str] = {}
    for path in dups:
        try:
            manifest = read_json(dups_manifest_path(path))
        except FileNotFoundError as exc:
            raise CliError(f"{path}: its manifest {dups_manifest_path(path)} is missing") from exc
        if manifest.get("format") != DUPS_FORMAT:
            raise CliError(f"{dups_manifest_path(path)} is not a {DUPS_FORMAT} file")
        check_identity(manifest, expected, f"duplicates {path}")
        if manifest["inputs_sha256"] != digest:
            raise CliError(
                f"{path} (bucket {manifest['bucket']}) was computed from other shards or "
                f"signatures ({manifest['n_shards']} shards) than the {len(keys)} given here; "
                "rerun minhash-buckets with the same --signatures"
            )
        if manifest["bucket"] in by_bucket:
            raise CliError(
                f"bucket {manifest['bucket']} given twice: {by_bucket[manifest['bucket']]}, {path}"
            )
        by_bucket[manifest["bucket"]] = path
    missing = sorted(set(range(nb)) - set(by_bucket))
    if missing:
        raise CliError(f"missing .dups for buckets {missing} (need all {nb})")

    with scratch_dir(clusters, "minhash-cluster") as work:
        for b, path in by_bucket.items():
            _link(path, work / "dups" / f"{b:05d}_00.dups")
        step = MinhashDedupCluster(
            input_folder=str(work / "dups"),
            output_folder=str(work / "out"),
            config=minhash_config(settings),
            save_cluster_id=True,
            save_cluster_size=True,
        )
        step.run()
        out = work / "out"
        frames = []
        n_removed = 0
        with atomic_dir(remove_dir) as rd:
            for rank, key in enumerate(keys):
                removed = _uint32s(out / f"{rank:06d}.remove")
                n_removed += len(removed)
                target = rd / f"{key}.remove"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(removed.tobytes())
                frames.append(_cluster_rows(key, rank, out, removed, signatures[key], streams[key]))
        table = pl.concat(frames) if frames else pl.DataFrame(schema=CLUSTER_SCHEMA)
        table = table.sort(["cluster_id", "shard", "doc_idx"])
        write_parquet(table, clusters, sort_by=None)
    n_clusters = table["cluster_id"].n_unique()
    log.info(
        "%d shards: %d clusters, %d documents in them, %d to remove",
        len(keys),
        n_clusters,
        table.height,
        n_removed,
    )
    return table


CLUSTER_SCHEMA = {
    "shard": pl.String,
    "doc_idx": pl.UInt32,
    "id": pl.String,
    "cluster_id": pl.UInt32,
    "cluster_size": pl.UInt32,
    "kept": pl.Boolean,
}


def _cluster_rows(key, rank, out: Path, removed, sigdir, stream) -> pl.DataFrame:
    pairs = _uint32s(out / f"{rank:06d}.clusters").reshape(-1, 2)
    sizes = _uint32s(out / f"{rank:06d}.sizes").reshape(-1, 2)
    if not np.array_equal(pairs[:, 0], sizes[:, 0]):
        raise CliError(f"shard {key}: datatrove's .clusters and .sizes disagree")
    doc_idx = pairs[:, 0]
    if not len(doc_idx):
        return pl.DataFrame(schema=CLUSTER_SCHEMA)
    ids = read_parquet(Path(sigdir) / "ids.parquet")["id"]
    if len(ids) != stream["n_docs"] or int(doc_idx.max()) >= len(ids):
        raise CliError(f"shard {key}: ids.parquet does not match its stream.json")
    return pl.DataFrame(
        {
            "shard": [key] * len(doc_idx),
            "doc_idx": doc_idx,
            "id": ids.gather(doc_idx.astype(np.int64)),
            "cluster_id": pairs[:, 1],
            "cluster_size": sizes[:, 1],
            "kept": ~np.isin(doc_idx, removed),
        },
        schema=CLUSTER_SCHEMA,
    )


# ---------------------------------------------------------------- step 4: filter


def filter_shard(input_path, remove, stream_path, output, removed_path, settings: dict):
    """Drop the docs listed in REMOVE; refuses a stream other than the signature step's."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupFilter

    settings = parse_settings(settings)
    recorded = read_stream(stream_path, str(input_path))
    check_identity(recorded, identity(settings), f"stream {stream_path}")
    df = read_shard(input_path)
    now = stream_fingerprint(shard_documents(df))
    was = {k: recorded.get(k) for k in now}
    if now != was:
        differs = [k for k in now if now[k] != was[k]]
        raise CliError(
            f"{input_path} is not the document stream its signatures were computed from "
            f"({stream_path}): {', '.join(differs)} differ (n_docs now {now['n_docs']}, "
            f"then {was['n_docs']}); its .remove indices would hit the wrong documents. "
            "Rerun minhash-signature, -buckets and -cluster for this input"
        )
    to_remove = _uint32s(Path(remove))
    if len(to_remove) and (
        np.any(np.diff(to_remove.astype(np.int64)) <= 0) or int(to_remove[-1]) >= df.height
    ):
        raise CliError(f"{remove}: indices are not increasing or exceed the {df.height} docs")
    with scratch_dir(output, "minhash-filter") as work:
        _link(remove, work / "remove" / "000000.remove")
        step = MinhashDedupFilter(input_folder=str(work / "remove"))
        kept_rows = [doc.metadata["row"] for doc in step.run(shard_documents(df), rank=0)]
    keep = np.zeros(df.height, dtype=bool)
    keep[kept_rows] = True
    if df.height - len(kept_rows) != len(to_remove) or keep[to_remove].any():
        raise CliError(f"{remove}: datatrove removed other documents than listed")
    kept = df.filter(pl.Series(keep))
    dropped = df.filter(pl.Series(~keep)).with_columns(reason=pl.lit(REMOVED_REASON))
    write_parquet(kept, output)
    write_parquet(dropped, removed_path)
    log.info("%s: kept %d, removed %d near-duplicates", input_path, kept.height, dropped.height)
    return kept, dropped


# ---------------------------------------------------------------- CLI


def add_arguments(name, parser):
    settings_help = "JSON (or @file): n_grams, num_buckets, hashes_per_bucket, seed, precision, "
    settings_help += "tokenizer (spacy|whitespace)"
    if name == "minhash-signature":
        parser.add_argument("--input", required=True, help="cleaned shard (.parquet)")
        parser.add_argument("--output-dir", required=True, help="signature directory (created)")
        parser.add_argument("--stream", required=True, help="stream fingerprint (.json)")
    elif name == "minhash-buckets":
        parser.add_argument("--bucket", required=True, type=int, help="bucket number")
        parser.add_argument("--signatures", required=True, nargs="+", metavar="KEY=SIGDIR")
        parser.add_argument("--output", required=True, help="B.dups (+ B.dups.json beside)")
    elif name == "minhash-cluster":
        parser.add_argument("--dups", required=True, nargs="+", help=".dups of every bucket")
        parser.add_argument("--signatures", required=True, nargs="+", metavar="KEY=SIGDIR")
        parser.add_argument("--remove-dir", required=True, help="{key}.remove per shard")
        parser.add_argument("--clusters", required=True, help="clusters table (.parquet)")
    elif name == "minhash-filter":
        parser.add_argument("--input", required=True, help="cleaned shard (.parquet)")
        parser.add_argument("--remove", required=True, help="this shard's .remove file")
        parser.add_argument("--stream", required=True, help="this shard's stream .json")
        parser.add_argument("--output", required=True, help="kept rows (.parquet)")
        parser.add_argument("--removed", required=True, help="removed rows + reason (.parquet)")
    parser.add_argument("--settings", required=True, help=settings_help)


def signature_main(args) -> int:
    signature(args.input, args.output_dir, args.stream, load_settings(args.settings))
    return 0


def buckets_main(args) -> int:
    signatures = parse_key_values(args.signatures, "--signatures")
    buckets(args.bucket, signatures, args.output, load_settings(args.settings))
    return 0


def cluster_main(args) -> int:
    signatures = parse_key_values(args.signatures, "--signatures")
    cluster(args.dups, signatures, args.remove_dir, args.clusters, load_settings(args.settings))
    return 0


def filter_main(args) -> int:
    settings = load_settings(args.settings)
    filter_shard(args.input, args.remove, args.stream, args.output, args.removed, settings)
    return 0
