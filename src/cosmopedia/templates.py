"""Prompt template files: read once per planning, one block per seed family.

A leaf of the package (planning and the prompts step both read templates through it).
"""

from __future__ import annotations

import copy
import functools
import os

from cosmopedia import yamlfile
from cosmopedia.errors import PlanError


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> dict:
    # Keyed by mtime and size: planning reads the file once, not once per source.
    return yamlfile.load(path) or {}


def load_family(path: str, family: str) -> dict:
    """The block of `family` in the templates file at `path` (a copy)."""
    stat = os.stat(path)
    templates = _read(path, stat.st_mtime_ns, stat.st_size)
    if family not in templates:
        raise PlanError(f"prompt templates {path!r} have no block for seed family {family!r}")
    return copy.deepcopy(templates[family])
