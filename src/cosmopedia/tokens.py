"""Token counts of generated texts with the model's own tokenizer, when it is on disk.

Cosmopedia v0.1's `text_token_length` is `len(tokenizer.encode(completion))` with the
model's tokenizer (Mixtral's), special tokens on: it counts the BOS token. Its 150-token
minimum applies to that count. The clean step counts the same way when it finds the
model's `tokenizer.json` without the network (`clean.token_count: auto` or `tokenizer`):
the file named by `clean.tokenizer`, or the one in the local Hugging Face cache for
`generation.model` at `generation.revision`. Otherwise the engine's count of generated
tokens stays (`auto` or `engine`). Which one was used is recorded in each clean shard's
metadata and in the manifest.

Planning finds the file and hashes it (cached by size and mtime): the clean jobs' settings
hold the sha256, so a tokenizer that appears, changes or goes reruns them; they hold no
absolute cache path (the job finds the file the same way and checks its hash).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cosmopedia.errors import CliError

TOKENIZER_FILE = "tokenizer.json"
_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, found as it finds it (without importing it)."""
    if cache := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(cache)
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(home) / "hub"


def cached_tokenizer(model: str, revision: str) -> str | None:
    """The model's tokenizer.json in the local Hub cache at `revision` (a commit sha, or a
    branch/tag that the cache maps to one), or None. A local model folder works too."""
    if os.path.isdir(model):
        path = Path(model) / TOKENIZER_FILE
        return str(path) if path.is_file() else None
    if "/" not in model:
        return None
    repo = hub_cache_dir() / f"models--{model.replace('/', '--')}"
    commit = revision
    if not _COMMIT.fullmatch(revision):
        ref = repo / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text(encoding="utf-8").strip()
    path = repo / "snapshots" / commit / TOKENIZER_FILE
    return str(path) if path.is_file() else None


def find(tokenizer: str | None, model: str, revision: str) -> str | None:
    """The tokenizer file to count with: `tokenizer` (a path) or the cached model's."""
    if tokenizer is not None:
        if not os.path.isfile(tokenizer):
            raise CliError(f"clean.tokenizer: {tokenizer!r} is not a file")
        return tokenizer
    return cached_tokenizer(model, revision)


class Counter:
    """len(encode(text)) with a tokenizer.json (the `tokenizers` library, as transformers'
    fast tokenizers; special tokens such as the BOS counted when `special`)."""

    def __init__(self, path: str, special: bool):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as exc:  # a damaged or foreign file: say which
            raise CliError(f"{path}: cannot load the tokenizer: {exc}") from exc
        self.special = special

    def count(self, texts: list[str]) -> list[int]:
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=self.special)
        return [len(e.ids) for e in encodings]
