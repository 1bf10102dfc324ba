"""The N-gram index of benchmark items, and the text normalisation it is built on.

Cosmopedia's decontamination normalises texts (NFD, characters of category Mn dropped,
lowercased, `\\w+` words) and finds (row, item) candidates sharing an N-gram of tokens.
`BenchmarkIndex` holds the items' normalised texts and an N-gram -> items index; the
benchmarks step builds and saves it once per version, every decontaminate job loads it.
How the normalisation is made fast is told in cosmopedia.decontam's docstring.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata

import numpy as np
import polars as pl

from cosmopedia.errors import CliError

log = logging.getLogger("cosmopedia.ngram_index")

INDEX_FORMAT_VERSION = 2
# The columns of prepared benchmark items (cosmopedia.benchmarks writes them).
ITEM_SCHEMA = {"id": pl.String, "task_name": pl.String, "text": pl.String}


# ---------------------------------------------------------------- normalisation

# ASCII bytes: A-Z -> a-z, every other byte that is not a \w character (letter, digit, _)
# -> space. Bytes of multi-byte UTF-8 characters are kept (those characters are \w by then).
_ASCII_TABLE = bytes(
    ord(chr(c).lower()) if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)
) + bytes(range(128, 256))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


class _NotPerChar(Exception):
    pass


def _char_image(char: str) -> str | bool:
    """What NFD, dropping Mn, lowercasing and splitting on non-word characters make of one
    character alone.

    That is what they make of it inside any text too, unless canonical reordering could
    move a surviving combining character (combining class > 0 but not Mn) or the lowercase
    depends on the context (capital sigma): then False.
    """
    decomposed = unicodedata.normalize("NFD", char)
    if any(unicodedata.combining(c) and unicodedata.category(c) != "Mn" for c in decomposed):
        return False
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    if "\u03a3" in stripped:
        return False
    return "".join(c if c.isalnum() or c == "_" else " " for c in stripped.lower())


class _Images(dict):
    """Code point -> its image (str.translate's table), computed on first use."""

    def __missing__(self, code: int) -> str:
        image = _char_image(chr(code))
        if image is False:
            raise _NotPerChar
        self[code] = image
        return image


_IMAGES = _Images()
_ENCODE_ERRORS = "cosmopedia.ngram_index.images"


def _images_of_run(exc: UnicodeEncodeError) -> tuple[bytes, int]:
    """ASCII encoding's error handler: a run of non-ASCII characters -> UTF-8 of its image."""
    return exc.object[exc.start : exc.end].translate(_IMAGES).encode("utf-8"), exc.end


codecs.register_error(_ENCODE_ERRORS, _images_of_run)


def token_bytes(text: str) -> bytes:
    r"""UTF-8 of Cosmopedia's normalisation of `text`, every byte outside a token a space.

    Cosmopedia: NFD, drop category-Mn characters, lowercase, re.findall(r"\w+"). A str
    character matches \w exactly when it is alphanumeric (str.isalnum) or "_", so the
    tokens are the runs of such characters. All four steps work character by character
    (see _char_image for the exceptions, which take the whole-text path), so ASCII goes
    through one bytes.translate table and each run of non-ASCII characters through the
    ASCII codec's error handler (C speed between the runs), each distinct character's
    image computed once.
    """
    try:
        data = text.encode("ascii", _ENCODE_ERRORS)
    except _NotPerChar:
        text = unicodedata.normalize("NFD", text)
        for char in set(_NON_ASCII.findall(text)):
            if unicodedata.category(char) == "Mn":
                text = text.replace(char, "")
        text = text.lower()
        for char in set(_NON_ASCII.findall(text)):
            if not char.isalnum():
                text = text.replace(char, " ")
        data = text.encode("utf-8")
    return data.translate(_ASCII_TABLE)


def tokens(text: str) -> list[str]:
    """Cosmopedia's tokenize(text)."""
    return [t.decode("utf-8") for t in token_bytes(text).split()]


def normalize(text: str) -> str:
    """The tokens joined by single spaces: the string difflib compares."""
    return b" ".join(token_bytes(text).split()).decode("utf-8")


# ---------------------------------------------------------------- N-gram keys
#
# A token's key is a polynomial hash of its bytes, an N-gram's key a polynomial hash of
# its tokens' keys, both modulo 2**64 (numpy's uint64 arithmetic wraps) and computed for
# a whole text at once from prefix sums. Equal N-grams get equal keys; every key hit is
# then checked by comparing the N-gram's text with the item's, so a hash collision can
# never make a candidate: the keys only have to be fast.

_BYTE_BASE = 0x9E3779B97F4A7C15
_TOKEN_BASE = 0xC2B2AE3D27D4EB4F
# Prefilter of the key lookups: a bit per value of a key's top bits, about 64 bits per key
# (at least 2**20: 128 KiB; at most 2**28: 32 MiB), so that about 1.5% of a text's N-grams
# pass it to the binary search. A packed bit array, not one byte per flag: 8 times fewer
# cache misses (the lookups are random), 3 times faster on 2 cores.
_FLAG_BITS_PER_KEY, _MIN_FLAG_BITS, _MAX_FLAG_BITS = 64, 20, 28


class _Powers:
    """base**i and base**-i modulo 2**bits (odd base: invertible), grown on demand."""

    def __init__(self, base: int, dtype) -> None:
        self.dtype = np.dtype(dtype)
        modulus = 2 ** (8 * self.dtype.itemsize)
        self.base = self.dtype.type(base % modulus)
        self.inverse = self.dtype.type(pow(base, -1, modulus))
        self.pow = self.inv = np.ones(1, dtype=self.dtype)

    def upto(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pow) < size:
            size = max(size, 2 * len(self.pow))
            pw, iv = np.ones(size, self.dtype), np.ones(size, self.dtype)
            with np.errstate(over="ignore"):
                np.cumprod(np.full(size - 1, self.base), out=pw[1:])
                np.cumprod(np.full(size - 1, self.inverse), out=iv[1:])
            self.pow, self.inv = pw, iv
        return self.pow, self.inv


# Token keys are 32-bit (numpy's uint32 arithmetic is many times faster than uint64 on a
# long byte buffer; a collision only costs a failed check), N-gram keys 64-bit.
_BYTE_POWERS = _Powers(_BYTE_BASE, np.uint32)
_TOKEN_POWERS = _Powers(_TOKEN_BASE, np.uint64)


def _span_keys(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, powers) -> np.ndarray:
    """sum_k (values[s + k] + 1) * base**k over every span [s, e), modulo 2**bits."""
    pw, inv = powers.upto(len(values) + 1)
    with np.errstate(over="ignore"):
        terms = np.add(values, 1, dtype=powers.dtype)
        terms *= pw[: len(values)]
        prefix = np.zeros(len(values) + 1, dtype=powers.dtype)
        np.cumsum(terms, out=prefix[1:])
        return (prefix[ends] - prefix[starts]) * inv[starts]


def _token_spans(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Byte [start, end) of every token (run of non-space bytes) of a token_bytes buffer."""
    word = np.frombuffer(b" " + buf + b" ", dtype=np.uint8) != ord(" ")
    # A change between padded bytes k and k + 1 is a token start or end at byte k of buf.
    edges = np.flatnonzero(word[1:] != word[:-1])
    return edges[0::2], edges[1::2]


def _ngram_keys(buf: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key of the N-gram starting at each token, token starts, token ends)."""
    starts, ends = _token_spans(buf)
    if len(starts) < n:
        return np.zeros(0, dtype=np.uint64), starts, ends
    token_keys = _span_keys(np.frombuffer(buf, dtype=np.uint8), starts, ends, _BYTE_POWERS)
    first = np.arange(len(starts) - n + 1)
    return _span_keys(token_keys, first, first + n, _TOKEN_POWERS), starts, ends


def _sorted_items(items: pl.DataFrame) -> pl.DataFrame:
    items = items.select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA).sort("id")
    dupes = items.filter(pl.col("id").is_duplicated())["id"].unique().sort().to_list()
    if dupes:
        raise CliError(f"duplicate benchmark item ids: {dupes[:5]}")
    return items


class BenchmarkIndex:
    """Items sorted by id, their normalised texts and an N-gram -> items index.

    `blob` holds every item's normalised text (UTF-8), each followed by a newline: item i
    is blob[base[i]:base[i + 1] - 1]. A posting (key, item, at, size) says that the item
    has the N-gram blob[at:at + size]; one posting per (key, item), sorted by key, item.
    """

    ARRAYS = ("base", "n_tokens", "keys", "post_item", "post_at", "post_size")

    def __init__(self, items: pl.DataFrame, ngram: int):
        items = _sorted_items(items)
        self.ngram = n = ngram
        self.ids: list[str] = items["id"].to_list()
        self.tasks: list[str] = items["task_name"].to_list()
        norms = [b" ".join(token_bytes(text).split()) + b"\n" for text in items["text"]]
        self.blob = b"".join(norms)
        self.base = np.cumsum([0] + [len(norm) for norm in norms], dtype=np.int64)
        # With its newlines as spaces, the blob is one token_bytes buffer of all items.
        keys, starts, ends = _ngram_keys(self.blob.replace(b"\n", b" "), n)
        owner = np.searchsorted(self.base, starts, side="right") - 1
        self.n_tokens = np.bincount(owner, minlength=len(self.ids)).astype(np.int64)
        first = np.arange(len(keys))
        inside = owner[first] == owner[first + n - 1]  # no N-gram across two items
        first, keys = first[inside], keys[inside]
        item, at = owner[first], starts[first]
        size = ends[first + n - 1] - at
        order = np.lexsort((at, item, keys))
        keys, item, at, size = keys[order], item[order], at[order], size[order]
        unique = np.ones(len(keys), dtype=bool)
        unique[1:] = (keys[1:] != keys[:-1]) | (item[1:] != item[:-1])
        self.keys = keys[unique]
        self.post_item = item[unique].astype(np.int32)
        self.post_at = at[unique].astype(np.int64)
        self.post_size = size[unique].astype(np.int32)
        self._finish()

    def _finish(self) -> None:
        wanted = (len(self.keys) * _FLAG_BITS_PER_KEY).bit_length()
        bits = min(_MAX_FLAG_BITS, max(_MIN_FLAG_BITS, wanted))
        self.flag_shift = np.uint64(64 - bits)
        flags = np.zeros(1 << bits, dtype=bool)
        flags[self.keys >> self.flag_shift] = True
        self.flags = np.packbits(flags, bitorder="little")

    def _flagged(self, keys: np.ndarray) -> np.ndarray:
        """Indices of the keys whose flag is set (a superset of those in the index)."""
        top = keys >> self.flag_shift
        bit = (top & np.uint64(7)).astype(np.uint8)
        return np.flatnonzero((self.flags[top >> np.uint64(3)] >> bit) & np.uint8(1))
        self.too_short = int((self.n_tokens < self.ngram).sum())
        if self.too_short:
            log.warning(
                "%d benchmark items have < %d tokens: never matched", self.too_short, self.ngram
            )

    def norm(self, pos: int) -> str:
        return self.blob[self.base[pos] : self.base[pos + 1] - 1].decode("utf-8")

    def save(self, path) -> None:
        """Consecutive .npy records (np.savez would stamp the time into its zip)."""
        from cosmopedia.io import atomic_path

        ids = "\n".join(self.ids).encode("utf-8")  # ids hold no newline (checked on load)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.array([INDEX_FORMAT_VERSION, self.ngram, len(self.ids)], np.int64))
            for blob in (ids, self.blob):
                np.save(f, np.frombuffer(blob, dtype=np.uint8), allow_pickle=False)
            for name in self.ARRAYS:
                np.save(f, getattr(self, name), allow_pickle=False)

    @classmethod
    def load(cls, items: pl.DataFrame, path, ngram: int) -> BenchmarkIndex:
        """The index save() wrote, for these items (checked) and this N."""
        items = _sorted_items(items)
        self = cls.__new__(cls)
        with open(path, "rb") as f:
            version, built_for, n_items = np.load(f, allow_pickle=False).tolist()
            if version != INDEX_FORMAT_VERSION:
                raise CliError(f"{path}: index format {version}, expected {INDEX_FORMAT_VERSION}")
            ids = np.load(f, allow_pickle=False).tobytes().decode("utf-8")
            self.blob = np.load(f, allow_pickle=False).tobytes()
            for name in cls.ARRAYS:
                setattr(self, name, np.load(f, allow_pickle=False))
        self.ids = ids.split("\n") if n_items else []
        if built_for != ngram or self.ids != items["id"].to_list():
            raise CliError(
                f"{path} was built for other items or another ngram ({built_for}; this run "
                f"{ngram}); rerun `cosmopedia benchmarks`"
            )
        self.ngram = ngram
        self.tasks = items["task_name"].to_list()
        self._finish()
        return self

    def candidates(self, bufs: list[bytes]) -> list[list[int]]:
        """For each token_bytes buffer, the positions (= id order) of the items sharing an
        N-gram with it, the likeliest matches first. One numpy pass over all buffers
        joined by spaces.

        Order: the share of the item's N-grams found in the buffer (distinct N-gram keys,
        over the item's N-gram count), highest first, ties by position. A verbatim copy
        of an item comes first; an item sharing one N-gram with the text (however often
        repeated) comes late.
        """
        n = self.ngram
        found: list[dict[int, set[int]]] = [{} for _ in bufs]  # item -> keys found
        if not bufs or not len(self.keys):
            return [[] for _ in bufs]
        joined = b" ".join(bufs)
        keys, starts, ends = _ngram_keys(joined, n)
        maybe = self._flagged(keys)
        if len(maybe):
            bases = np.cumsum([0] + [len(b) + 1 for b in bufs], dtype=np.int64)
            doc = np.searchsorted(bases, starts[maybe], side="right") - 1
            last_doc = np.searchsorted(bases, starts[maybe + n - 1], side="right") - 1
            maybe, doc = maybe[doc == last_doc], doc[doc == last_doc]  # within one buffer
            keys = keys[maybe]
            lo = np.searchsorted(self.keys, keys, side="left")
            # The prefilter's false positives leave here, before the Python loop.
            hit = self.keys[np.minimum(lo, len(self.keys) - 1)] == keys
            maybe, keys, lo, doc = maybe[hit], keys[hit], lo[hit], doc[hit]
            hi = np.searchsorted(self.keys, keys, side="right")
            hits = zip(*(a.tolist() for a in (maybe, keys, lo, hi, doc)), strict=True)
            post_item, post_at, post_size = self.post_item, self.post_at, self.post_size
            for first, key, a, b, d in hits:
                gram = None
                shared = found[d]
                for post in range(a, b):
                    item = int(post_item[post])
                    if item in shared:  # a candidate already
                        shared[item].add(key)
                        continue
                    if gram is None:
                        gram = b" ".join(joined[starts[first] : ends[first + n - 1]].split())
                    at = int(post_at[post])
                    if self.blob[at : at + int(post_size[post])] == gram:  # exact, no collision
                        shared[item] = {key}
        return [self._ranked(shared) if shared else [] for shared in found]

    def _ranked(self, shared: dict[int, set[int]]) -> list[int]:
        """Items by the share of their N-grams found (highest first), then position."""
        share = {
            i: len(k) / max(1, int(self.n_tokens[i]) - self.ngram + 1) for i, k in shared.items()
        }
        return sorted(shared, key=lambda i: (-share[i], i))
