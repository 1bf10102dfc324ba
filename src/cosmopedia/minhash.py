"""MinHash near-duplicate removal: datatrove's four stages, one Snakemake job per task.

    minhash-signature  (one job per shard)   CLEAN.parquet -> SIGDIR/ (with SIGDIR/stream.json)
    minhash-buckets    (one job)             every SIGDIR's bucket_B.sig (+ a previous
                                             version's B.minhash.index) -> B.dups + B.dups.json
                                             + this version's B.minhash.index (+ .json), for
                                             every bucket B, as datatrove tasks
    minhash-cluster    (one job)             all .dups -> REMOVEDIR/{key}.remove and
                                             {key}.previous + clusters.parquet + report .tsv
    minhash-filter     (one job per shard)   CLEAN.parquet + {key}.remove -> kept + removed rows

The datatrove stages run unchanged (`step.run(...)`, no executor: its completion markers
would turn reruns into silent no-ops). Around them this module guards datatrove's traps:

- A shard's datatrove rank is its index in `shard_order(keys)`; each buckets/cluster job
  stages ONLY its declared inputs as symlinks in a fresh folder, so stale files are never
  read, and the ranks are the same in every job.
- The filter drops doc *positions*: it re-creates the stream with `shard_documents` (the
  same function the signature step used) and refuses to run unless its fingerprint (count,
  sha256 of the ordered ids and of the texts) equals the one recorded in SIGDIR/stream.json.
- Settings (and the datatrove and spaCy versions) are recorded with every signature and
  each bucket's duplicates; a later step fails, naming the shard or bucket, if any differs.

A signature directory SIGDIR holds `bucket_{b:03d}.sig` (datatrove's sorted records),
`stream.json` (the stream record; `--stream` writes a copy elsewhere) and `ids.parquet`
(doc_idx, id in stream order: the cluster step maps datatrove's doc indices back to ids).

Deduplicating against a previous version: the buckets job also writes this version's
index of every bucket (datatrove's `create_index_name`: the signatures of this version that
were not already in the indexes it was given), B.minhash.index with B.minhash.index.json.
Given a previous version's index files (`--index-from`), the buckets job stages them as
datatrove's `index_folder`, and every document matching one is removed: datatrove writes
(index, doc) pairs and the cluster step roots such clusters at the index. datatrove's
`only_dedup_in_index=True` would skip pairs between new documents, so that of two new
near-duplicates of the same old document one would slip through; this module keeps it
False, so new documents are also deduplicated among themselves, as without an index.
The removals caused by a previous version are listed in {key}.previous and the filter
gives them the reason `minhash_previous_version`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import struct
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np
import polars as pl
from datatrove.utils.word_tokenizers import SpaCyTokenizer, WordTokenizer

from cosmopedia import settings as step_settings
from cosmopedia.errors import CliError
from cosmopedia.hashing import sha256_file
from cosmopedia.io import (
    atomic_dir,
    read_json,
    read_parquet,
    remove_leftovers,
    require_columns,
    write_json,
    write_parquet,
)
from cosmopedia.plan import add_plan_arguments, plan_paths

log = logging.getLogger("cosmopedia.minhash")

# Tokenizers that give the same tokens: their signatures (and indexes) can be mixed.
SAME_TOKENS = {"spacy_cached": "spacy"}
STREAM_FORMAT = "cosmopedia.minhash.stream/2"
DUPS_FORMAT = "cosmopedia.minhash.dups/2"
INDEX_FORMAT = "cosmopedia.minhash.index/1"
INDEX_NAME = "index"  # datatrove's create_index_name inside the buckets job
REMOVED_REASON = "minhash_duplicate"
PREVIOUS_REASON = "minhash_previous_version"
SENTINEL = (1 << 32) - 1  # datatrove's file and doc number of an index entry in .dups
_KEY_RE = re.compile(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*")


# ---------------------------------------------------------------- settings


def parse_settings(raw) -> step_settings.Minhash:
    """The settings as the library functions take them: a `settings.Minhash`, or a dict of
    the config's minhash keys (checked against the schema, defaults filled in)."""
    if isinstance(raw, step_settings.Minhash):
        return raw
    return step_settings.from_dict(step_settings.Minhash, raw, "minhash")


def identity(settings: step_settings.Minhash) -> dict:
    """What must be equal for signatures to be comparable: settings + library versions.

    spaCy's version is part of it when spaCy tokenizes: another spaCy may split words
    differently and so change signatures.
    """
    spacy = version("spacy") if settings.tokenizer in ("spacy", "spacy_cached") else None
    ident = {
        "settings": step_settings.to_dict(settings),
        "datatrove": version("datatrove"),
        "spacy": spacy,
    }
    if settings.tokenizer == "nltk":
        ident["nltk"] = version("nltk")
    return ident


def token_identity(ident: dict) -> dict:
    """An identity with tokenizers that give the same tokens made equal (for indexes)."""
    settings = dict(ident.get("settings") or {})
    tok = settings.get("tokenizer")
    settings["tokenizer"] = SAME_TOKENS.get(tok, tok)
    return {**ident, "settings": settings}


def minhash_config(settings: step_settings.Minhash):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    # datatrove-2024-02: datatrove's own normalisation off (simplify_text only strips);
    # the word tokenizer normalises first, as datatrove did then (simplify_text_2024_02).
    norm = TextNormConfig() if settings.normalization == "datatrove" else RAW_TEXT
    return MinhashConfig(
        n_grams=settings.n_grams,
        num_buckets=settings.num_buckets,
        hashes_per_bucket=settings.hashes_per_bucket,
        seed=settings.seed,
        norm_config=norm,
        hash_config=HashConfig(precision=settings.precision, hash_fc=settings.hash_fc),
    )


def _raw_text_config():
    from datatrove.utils.text import TextNormConfig

    off = dict.fromkeys(
        ("lowercase", "norm_whitespace", "remove_punctuation", "norm_unicode_diacritics"),
        False,
    )
    return TextNormConfig(**off, norm_numbers=False, norm_weekdays=False, norm_monthnames=False)


RAW_TEXT = _raw_text_config()

# datatrove's text normalisation of February 2024 (commit 9e3dc416, the MinhashConfig that
# Cosmopedia v0.1's deduplicate_dataset.py used): lowercase, whitespace collapsed, then this
# punctuation *removed* (0.10 replaces it by spaces and keeps \t and \n apart), accents
# dropped; numbers kept (0.10 maps digits to 0).
PUNCTUATION_2024_02 = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 32), *range(127, 160)]))
)
_REMOVE_2024_02 = str.maketrans("", "", PUNCTUATION_2024_02)
_SPACES = re.compile(r"\s+")


def simplify_text_2024_02(text: str) -> str:
    """datatrove's simplify_text as of February 2024 (datatrove/pipeline/dedup/utils.py)."""
    text = _SPACES.sub(" ", text.lower().strip())
    text = text.translate(_REMOVE_2024_02)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.strip()


# Word tokenizers of the signature step (the `tokenizer` setting). All see datatrove's
# normalised text (simplify_text: lowercase, punctuation -> space, digits -> 0, no accents).
#   spacy         datatrove's default: spaCy's blank English tokenizer on every document.
#   spacy_cached  the same tokens, fast: spaCy splits text on spaces and tokenizes every
#                 space-separated piece on its own (its special cases that contain a space
#                 are only whitespace, which simplify_text has removed), so each distinct
#                 piece is tokenized once and remembered. Pieces of ASCII lowercase letters
#                 that are not one of spaCy's special cases (dont -> do nt, cannot -> can
#                 not) come back unchanged from spaCy and skip it. Tests and
#                 bench/dedup.py check that the tokens and signatures equal `spacy`'s.
#   whitespace    str.split: as fast, but different tokens (spaCy splits dont, 0km, ©...),
#                 so different signatures.
# Pieces remembered per process before the memo starts over (bounds memory, not results).
MEMO_LIMIT = 1 << 20


class WhitespaceSplitTokenizer(WordTokenizer):
    """str.split words: fast, but gives different signatures than spaCy."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", text)]


class CachedSpaCyTokenizer(SpaCyTokenizer):
    """datatrove's spaCy tokenizer, called once per distinct space-separated piece."""

    def __init__(self, language: str = "en"):
        super().__init__(language)
        self._memo: dict[str, list[str]] = {}
        self._special: frozenset[str] | None = None

    def _piece(self, piece: str) -> list[str]:
        if self._special is None:
            self._special = frozenset(self.tokenizer.tokenizer.rules)
        if piece.isascii() and piece.isalpha() and piece.islower() and piece not in self._special:
            toks = [piece]
        else:
            with self.tokenizer.memory_zone():
                spacy_toks = self.tokenizer.tokenizer(piece)
                toks = [t for t in (x.text.strip() for x in spacy_toks) if t]
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[piece] = toks
        return toks

    def word_tokenize(self, text: str) -> list[str]:
        memo = self._memo
        out: list[str] = []
        for piece in text.split(" "):
            if piece:
                toks = memo.get(piece)
                out += self._piece(piece) if toks is None else toks
        return out


class NltkTokenizer(WordTokenizer):
    """nltk.word_tokenize without its Punkt model (which would be a download).

    nltk.word_tokenize(text) is NLTKWordTokenizer on each sentence Punkt finds, and Punkt
    splits only after . ? or !: the normalised text (either normalisation) has none, so the
    one sentence is the whole text and this gives the same tokens, offline. Cosmopedia v0.1
    deduplicated with nltk 3.8.x; this is the installed nltk (3.10), whose word tokenizer
    also splits off U+2012 and U+2015 (figure dash, horizontal bar), which survive
    normalisation: the one known difference.
    """

    def __init__(self, language: str = "en"):
        from nltk.tokenize import NLTKWordTokenizer

        super().__init__()
        self._tokenizer = NLTKWordTokenizer()

    def word_tokenize(self, text: str) -> list[str]:
        return self._tokenizer.tokenize(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


class Normalising2024Tokenizer(WordTokenizer):
    """A word tokenizer that first normalises as datatrove did in February 2024."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def word_tokenize(self, text: str) -> list[str]:
        return self.inner.word_tokenize(simplify_text_2024_02(text))

    def sent_tokenize(self, text: str) -> list[str]:
        return self.inner.sent_tokenize(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return self.inner.span_tokenize(text)


TOKENIZER_CLASSES = {
    "whitespace": WhitespaceSplitTokenizer,
    "spacy_cached": CachedSpaCyTokenizer,
    "nltk": NltkTokenizer,
}


_tokenizers: dict[tuple[str, str], object] = {}


def word_tokenizer(name: str, normalization: str = "datatrove"):
    """The `language` argument of MinhashDedupSignature for the `tokenizer` and
    `normalization` settings."""
    key = (name, normalization)
    if key == ("spacy", "datatrove"):
        from datatrove.utils.typeshelper import Languages

        return Languages.english  # datatrove's default: spaCy's blank English tokenizer
    # One instance per process: the memo is shared by every signature step of the process.
    if key not in _tokenizers:
        if name == "spacy":
            from datatrove.utils.typeshelper import Languages
            from datatrove.utils.word_tokenizers import load_word_tokenizer

            inner = load_word_tokenizer(Languages.english)
        else:
            inner = TOKENIZER_CLASSES[name]("en")
        if normalization == "datatrove-2024-02":
            inner = Normalising2024Tokenizer(inner)
        _tokenizers[key] = inner
    return _tokenizers[key]


def check_identity(found: dict, expected: dict, what: str) -> None:
    """Fail, naming `what` and the differing values, unless `found` matches `expected`."""
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
    for lib in ("datatrove", "spacy", "nltk"):
        if found.get(lib) != expected.get(lib):
            raise CliError(
                f"{what} was made with {lib} {found.get(lib)}, this run uses "
                f"{expected.get(lib)}; rerun the MinHash steps from minhash-signature"
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
    require_columns(df, path, ("id", "text"))
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
def scratch_dir(beside: str | os.PathLike, step: str) -> Iterator[Path]:
    """datatrove's working folder, on the output's filesystem so results move by rename.

    Named after the step and the output (.<step>.<output name>.<random>): shards of one
    source share the parent folder, and after a success this job removes only the scratch
    folders its own output's killed earlier runs left there.
    """
    beside = Path(beside)
    parent = beside.parent
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{step}.{beside.name}."
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        yield Path(tmp)
    remove_leftovers(parent, prefix)


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
    """MinHash signatures of one shard -> SIGDIR (with its stream record, stream.json, which
    the filter step checks); `stream_path`, if given, gets a copy. Returns the record."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    settings = parse_settings(settings)
    nb = settings.num_buckets
    df = read_shard(input_path)
    hasher = StreamHasher()
    with scratch_dir(output_dir, "minhash-signature") as work, atomic_dir(output_dir) as out:
        step = MinhashDedupSignature(
            output_folder=str(work),
            config=minhash_config(settings),
            language=word_tokenizer(settings.tokenizer, settings.normalization),
        )
        step.run(hasher.wrap(shard_documents(df)), rank=0, world_size=1)
        for b in range(nb):
            produced = work / f"bucket_{b:03d}" / "00000.minhash.sig"
            if produced.exists():
                os.replace(produced, out / f"bucket_{b:03d}.sig")
            else:  # no document at all: datatrove may not create the files
                (out / f"bucket_{b:03d}.sig").write_bytes(b"")
        # datatrove's record: hashes_per_bucket hashes + the uint32 doc index.
        fmt = f"<{settings.hashes_per_bucket}{step.config.hash_config.struct_format}I"
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
    if stream_path:
        write_json(stream, stream_path)
    log.info(
        "%s: %d docs, %d with a signature (docs under n_grams words get none)",
        input_path,
        stream["n_docs"],
        stream["n_signed"],
    )
    return stream


# ---------------------------------------------------------------- step 2: buckets


def index_manifest_path(index) -> Path:
    return Path(f"{index}.json")


def check_previous_index(path, expected: dict, bucket: int) -> dict:
    """A previous version's index file of this bucket: its record for the .dups manifest.

    Our exports carry a manifest (settings, versions, bucket) that must match this run's,
    up to tokenizers giving the same tokens. A bare datatrove index file has none: it is
    used as it is, with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f"previous index {path} is missing")
    record = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest_path = index_manifest_path(path)
    if not manifest_path.exists():
        log.warning("%s has no manifest: its settings cannot be checked", path)
        return record
    manifest = read_json(manifest_path)
    if manifest.get("format") != INDEX_FORMAT:
        raise CliError(f"{manifest_path} is not a {INDEX_FORMAT} file")
    if manifest.get("bucket") != bucket:
        raise CliError(f"{path} is the index of bucket {manifest.get('bucket')}, not {bucket}")
    if manifest.get("sha256") != record["sha256"]:
        raise CliError(f"{path} does not match its manifest (changed after it was written?)")
    check_identity(token_identity(manifest), token_identity(expected), f"previous index {path}")
    return record | {"version": manifest.get("version")}


def dups_path(dups_dir, bucket: int) -> Path:
    return Path(dups_dir) / f"{bucket}.dups"


def index_path(index_dir, bucket: int) -> Path:
    return Path(index_dir) / f"{bucket}.minhash.index"


_INDEX_BUCKET_RE = re.compile(r"(?:^|/)(?:bucket_(\d{3})/[^/]*|(\d+))\.minhash\.index$")


def index_bucket(path) -> int:
    """The bucket of a previous index file: {b}.minhash.index or bucket_{b:03d}/*.minhash.index."""
    match = _INDEX_BUCKET_RE.search(Path(path).as_posix())
    if not match:
        raise CliError(f"{path}: not a {{bucket}}.minhash.index or bucket_NNN/*.minhash.index file")
    return int(match.group(1) or match.group(2))


# Below this many bytes of signatures the buckets are merged one after the other in this
# process: starting datatrove's worker pool costs more than it saves.
POOL_MIN_BYTES = 128 << 20


def buckets(
    signatures: dict[str, str],
    dups_dir,
    settings: dict,
    index_from: Iterable[str] = (),
    index_dir=None,
    only: Iterable[int] | None = None,
    workers: int = 1,
    version_name: str | None = None,
) -> dict[int, dict]:
    """Duplicate pairs of every bucket over the declared shards -> DIR/{b}.dups + .json.

    index_from: index files of previous versions (any bucket; documents matching them are
    duplicates); index_dir: where to write this version's index ({b}.minhash.index +
    .json). The buckets run as datatrove tasks: in this process, or with `workers` > 1 and
    enough data in datatrove's LocalPipelineExecutor (a fresh logging folder each time,
    so its completion markers never skip a task). Returns the manifest of each bucket.
    """
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

    settings = parse_settings(settings)
    expected = identity(settings)
    nb = settings.num_buckets
    todo = sorted(set(range(nb) if only is None else only))
    if not todo or todo[0] < 0 or todo[-1] >= nb:
        raise CliError(f"buckets {todo} are not within 0..{nb - 1}")
    keys = shard_order(signatures)
    streams = load_signature_streams(signatures, expected)
    digest = inputs_digest(streams)
    previous: dict[int, list[tuple[str, dict]]] = {b: [] for b in range(nb)}
    for path in index_from:
        b = index_bucket(path)
        if b >= nb:
            raise CliError(f"{path} is the index of bucket {b}; this run has {nb} buckets")
        previous[b].append((str(path), check_previous_index(path, expected, b)))
    dups_dir = Path(dups_dir)
    dups_dir.mkdir(parents=True, exist_ok=True)
    with scratch_dir(dups_dir / "x", "minhash-buckets") as work:
        sig_bytes = 0
        for b in todo:
            sub = f"bucket_{b:03d}"
            (work / "sigs" / sub).mkdir(parents=True)
            for rank, key in enumerate(keys):
                link = work / "sigs" / sub / f"{rank:05d}.minhash.sig"
                _link(Path(signatures[key]) / f"{sub}.sig", link)
                sig_bytes += link.stat().st_size
            # datatrove's index folder: the previous indexes under names that can never be
            # taken for the one this job writes (datatrove skips `{INDEX_NAME}_NN` files).
            (work / "index" / sub).mkdir(parents=True)
            for i, (path, _) in enumerate(previous[b]):
                _link(path, work / "index" / sub / f"previous{i:03d}.minhash.index")
        step = MinhashDedupBuckets(
            input_folder=str(work / "sigs"),
            output_folder=str(work / "dups"),
            index_folder=str(work / "index") if (index_from or index_dir) else None,
            config=minhash_config(settings),
            only_dedup_in_index=False,
            create_index_name=INDEX_NAME if index_dir else None,
        )
        if workers > 1 and len(todo) > 1 and sig_bytes >= POOL_MIN_BYTES:
            from datatrove.executor import LocalPipelineExecutor

            executor = LocalPipelineExecutor(
                [step], tasks=nb, workers=min(workers, len(todo)), logging_dir=str(work / "logs")
            )
            for b in set(range(nb)) - set(todo):  # every rank is a bucket: skip the others
                executor.mark_rank_as_completed(b)
            executor.run()
        else:
            for b in todo:
                step.run(None, rank=b, world_size=nb)
        manifests = {}
        for b in todo:
            produced = work / "dups" / f"{b:05d}_00.dups"
            if not produced.exists():
                raise CliError(f"datatrove wrote no duplicates file for bucket {b}")
            pairs = _uint32s(produced).reshape(-1, 4)
            records = [record for _, record in previous[b]]
            manifest = {
                "format": DUPS_FORMAT,
                "bucket": b,
                "n_shards": len(keys),
                "inputs_sha256": digest,
                "n_pairs": len(pairs),
                "n_previous_matches": int((pairs[:, 0] == SENTINEL).sum()),
                "previous_indexes": records,
                **expected,
            }
            if index_dir is not None:
                made = work / "index" / f"bucket_{b:03d}" / f"{INDEX_NAME}_00.minhash.index"
                if not made.exists():  # no signature at all
                    made.write_bytes(b"")
                out = index_path(index_dir, b)
                write_json(
                    {
                        "format": INDEX_FORMAT,
                        "bucket": b,
                        "version": version_name,
                        "n_signatures": made.stat().st_size // _index_record_size(settings),
                        "sha256": sha256_file(made),
                        "inputs_sha256": digest,
                        "previous_indexes": records,
                        **expected,
                    },
                    index_manifest_path(out),
                )
                os.replace(made, out)
            write_json(manifest, dups_manifest_path(dups_path(dups_dir, b)))
            os.replace(produced, dups_path(dups_dir, b))
            manifests[b] = manifest
    log.info(
        "%d buckets over %d shards: %d duplicate pairs, %d of them with %d previous index files",
        len(todo),
        len(keys),
        sum(m["n_pairs"] for m in manifests.values()),
        sum(m["n_previous_matches"] for m in manifests.values()),
        sum(len(v) for v in previous.values()),
    )
    return manifests


def _index_record_size(settings: step_settings.Minhash) -> int:
    fmt = "<" + ("Q" if settings.precision == 64 else "I") * settings.hashes_per_bucket
    return struct.calcsize(fmt)


def dups_manifest_path(dups) -> Path:
    return Path(f"{dups}.json")


# ---------------------------------------------------------------- step 3: cluster


def cluster(
    dups: list[str],
    signatures: dict[str, str],
    remove_dir,
    clusters,
    settings: dict,
    report=None,
):
    """All buckets' pairs -> `{key}.remove` + `{key}.previous` per shard (empty if none),
    the clusters table and, if `report`, its one-row-per-cluster summary (.tsv)."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

    settings = parse_settings(settings)
    expected = identity(settings)
    nb = settings.num_buckets
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
        # Clusters rooted at a previous version's index (datatrove's (SENTINEL, SENTINEL)).
        index_clusters = _uint32s(out / f"{SENTINEL:06d}.clusters").reshape(-1, 2)[:, 1]
        in_index = pl.col("cluster_id").is_in(pl.Series(index_clusters, dtype=pl.UInt32).implode())
        frames = []
        n_removed = n_previous = 0
        with atomic_dir(remove_dir) as rd:
            for rank, key in enumerate(keys):
                removed = _uint32s(out / f"{rank:06d}.remove")
                rows = _cluster_rows(key, rank, out, removed, signatures[key], streams[key])
                rows = rows.with_columns(previous_version=in_index)
                previous = np.sort(rows.filter("previous_version")["doc_idx"].to_numpy())
                n_removed += len(removed)
                n_previous += len(previous)
                target = rd / f"{key}.remove"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(removed.tobytes())
                (rd / f"{key}.previous").write_bytes(previous.astype("<u4").tobytes())
                frames.append(rows)
        table = (
            pl.concat(frames).cast(CLUSTER_SCHEMA)
            if frames
            else pl.DataFrame(schema=CLUSTER_SCHEMA)
        )
        table = table.sort(["cluster_id", "shard", "doc_idx"])
        write_parquet(table, clusters, sort_by=None)
    if report is not None:
        write_cluster_report(table, report)
    n_clusters = table["cluster_id"].n_unique()
    log.info(
        "%d shards: %d clusters, %d documents in them, %d to remove (%d matching a previous "
        "version)",
        len(keys),
        n_clusters,
        table.height,
        n_removed,
        n_previous,
    )
    return table


CLUSTER_SCHEMA = {
    "shard": pl.String,
    "doc_idx": pl.UInt32,
    "id": pl.String,
    "cluster_id": pl.UInt32,
    # datatrove's size: members of this version + 1 if a previous version is in the cluster
    "cluster_size": pl.UInt32,
    "kept": pl.Boolean,
    "previous_version": pl.Boolean,  # the cluster holds a document of a previous version
}
REPORT_COLUMNS = ["cluster_id", "size", "kept_id", "previous_version", "removed_ids", "shards"]


def cluster_report(table: pl.DataFrame) -> pl.DataFrame:
    """One row per cluster: size, the member kept (empty if a previous version's), the
    removed members' ids and the shards involved; largest clusters first."""
    if not table.height:
        return pl.DataFrame(schema=dict.fromkeys(REPORT_COLUMNS, pl.String))
    return (
        table.sort("id")
        .group_by("cluster_id")
        .agg(
            pl.col("cluster_size").first().alias("size"),
            pl.col("id").filter(pl.col("kept")).first().fill_null("").alias("kept_id"),
            pl.col("previous_version").first(),
            pl.col("id").filter(~pl.col("kept")).str.join(",").alias("removed_ids"),
            pl.col("shard").unique().sort().str.join(",").alias("shards"),
        )
        .sort(["size", "cluster_id"], descending=[True, False])
        .select(REPORT_COLUMNS)
    )


def write_cluster_report(table: pl.DataFrame, path) -> None:
    from cosmopedia.io import atomic_path

    with atomic_path(path) as tmp:
        cluster_report(table).write_csv(tmp, separator="\t")


def _cluster_rows(key, rank, out: Path, removed, sigdir, stream) -> pl.DataFrame:
    pairs = _uint32s(out / f"{rank:06d}.clusters").reshape(-1, 2)
    sizes = _uint32s(out / f"{rank:06d}.sizes").reshape(-1, 2)
    if not np.array_equal(pairs[:, 0], sizes[:, 0]):
        raise CliError(f"shard {key}: datatrove's .clusters and .sizes disagree")
    doc_idx = pairs[:, 0]
    schema = {k: v for k, v in CLUSTER_SCHEMA.items() if k != "previous_version"}
    if not len(doc_idx):
        return pl.DataFrame(schema=schema)
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
        schema=schema,
    )


# ---------------------------------------------------------------- step 4: filter


def filter_shard(
    input_path, remove, stream_path, output, removed_path, settings: dict, previous=None
):
    """Drop the docs listed in REMOVE; refuses a stream other than the signature step's.

    `previous`: the {key}.previous file of the cluster step (removals caused by a
    previous version, reason minhash_previous_version); default: beside REMOVE.
    """
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
    previous = Path(previous) if previous else Path(remove).with_suffix(".previous")
    from_previous = _uint32s(previous)
    if not np.isin(from_previous, to_remove).all():
        raise CliError(f"{previous} lists documents that {remove} does not remove")
    with scratch_dir(output, "minhash-filter") as work:
        _link(remove, work / "remove" / "000000.remove")
        step = MinhashDedupFilter(input_folder=str(work / "remove"))
        kept_rows = [doc.metadata["row"] for doc in step.run(shard_documents(df), rank=0)]
    keep = np.zeros(df.height, dtype=bool)
    keep[kept_rows] = True
    if df.height - len(kept_rows) != len(to_remove) or keep[to_remove].any():
        raise CliError(f"{remove}: datatrove removed other documents than listed")
    kept = df.filter(pl.Series(keep))
    reasons = np.full(df.height, REMOVED_REASON, dtype=object)
    reasons[from_previous] = PREVIOUS_REASON
    dropped = df.with_columns(reason=pl.Series(reasons, dtype=pl.String)).filter(pl.Series(~keep))
    write_parquet(kept, output)
    write_parquet(dropped, removed_path)
    log.info(
        "%s: kept %d, removed %d near-duplicates (%d of a previous version)",
        input_path,
        kept.height,
        dropped.height,
        len(from_previous),
    )
    return kept, dropped


# ---------------------------------------------------------------- CLI


def signature_dirs(args) -> dict[str, str]:
    """{shard key: signature folder} from --signatures pairs or from the shard plan."""
    if args.signatures:
        return parse_key_values(args.signatures, "--signatures")
    return plan_paths(args.plan, args.root, "signatures")  # keys checked by shard_order


def add_arguments(name, parser):
    settings_help = "JSON (or @file): the config's minhash keys (config/README.md)"
    if name == "minhash-signature":
        parser.add_argument("--input", required=True, help="cleaned shard (.parquet)")
        parser.add_argument("--output-dir", required=True, help="signature directory (created)")
        parser.add_argument("--stream", help="also write the stream record here (.json)")
    elif name == "minhash-buckets":
        add_plan_arguments(parser, "signatures", "KEY=SIGDIR", "every shard's signatures")
        parser.add_argument("--dups-dir", required=True, help="{b}.dups (+ .json) per bucket")
        parser.add_argument("--index-dir", help="this version's {b}.minhash.index (+ .json)")
        parser.add_argument(
            "--index-from",
            nargs="*",
            default=[],
            metavar="INDEX",
            help="index files of previous versions: matching documents go",
        )
        parser.add_argument("--buckets", nargs="+", type=int, help="only these (default: all)")
        parser.add_argument("--workers", type=int, default=1, help="datatrove worker processes")
        parser.add_argument("--version-name", help="recorded in the index manifests")
    elif name == "minhash-cluster":
        parser.add_argument("--dups", required=True, nargs="+", help=".dups of every bucket")
        add_plan_arguments(parser, "signatures", "KEY=SIGDIR", "every shard's signatures")
        parser.add_argument("--remove-dir", required=True, help="{key}.remove per shard")
        parser.add_argument("--clusters", required=True, help="clusters table (.parquet)")
        parser.add_argument("--report", help="one row per cluster (.tsv)")
    elif name == "minhash-filter":
        parser.add_argument("--input", required=True, help="cleaned shard (.parquet)")
        parser.add_argument("--remove", required=True, help="this shard's .remove file")
        parser.add_argument("--previous", help="its .previous file (default: beside --remove)")
        parser.add_argument(
            "--stream",
            required=True,
            help="the stream record of its signatures (SIGDIR/stream.json)",
        )
        parser.add_argument("--output", required=True, help="kept rows (.parquet)")
        parser.add_argument("--removed", required=True, help="removed rows + reason (.parquet)")
    parser.add_argument("--settings", required=True, help=settings_help)


def _load(value: str) -> step_settings.Minhash:
    return step_settings.load(step_settings.Minhash, value)


def signature_main(args) -> int:
    signature(args.input, args.output_dir, args.stream, _load(args.settings))
    return 0


def buckets_main(args) -> int:
    signatures = signature_dirs(args)
    buckets(
        signatures,
        args.dups_dir,
        _load(args.settings),
        index_from=args.index_from,
        index_dir=args.index_dir,
        only=args.buckets,
        workers=args.workers,
        version_name=args.version_name,
    )
    return 0


def cluster_main(args) -> int:
    signatures = signature_dirs(args)
    settings = _load(args.settings)
    cluster(args.dups, signatures, args.remove_dir, args.clusters, settings, report=args.report)
    return 0


def filter_main(args) -> int:
    settings = _load(args.settings)
    filter_shard(
        args.input,
        args.remove,
        args.stream,
        args.output,
        args.removed,
        settings,
        previous=args.previous,
    )
    return 0
