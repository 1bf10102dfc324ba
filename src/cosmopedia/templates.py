"""Prompt template sets: files of templates as data, read once per planning.

A template set file (resources/prompts/*.yaml) is:

    set: <name>                 # e.g. project, cosmopedia-v0.1
    syntax: format | markers    # str.format placeholders, or original markers that the
                                # builder replaces with str.replace in a given order
    seed_fields: stripped | verbatim   # (default stripped) how ingest keeps seed text
    families:
      <family>:
        entries: {<style or audience>: {format, audience, template, ...}}   # one variant
        # or
        variants: {<variant>: {<builder options>..., entries: {...}}}

Entries keep the file's order (a fan-out builds them in that order). The loader refuses
duplicate keys: a second `reddit_post:` would otherwise silently replace the first.

A leaf of the package: planning and the prompts step both read templates through it.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass

from cosmopedia import yamlfile
from cosmopedia.errors import PlanError

SYNTAXES = ("format", "markers")
SEED_FIELDS = ("stripped", "verbatim")
DEFAULT_VARIANT = "default"


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int) -> dict:
    # Keyed by mtime and size: planning reads each file once, not once per source.
    data = yamlfile.read(path) or {}
    if not isinstance(data, dict) or not isinstance(data.get("families"), dict):
        raise PlanError(f"prompt templates {path!r}: expected a mapping with `families`")
    if not isinstance(data.get("set"), str):
        raise PlanError(f"prompt templates {path!r}: `set` (the set's name) is missing")
    if data.get("syntax") not in SYNTAXES:
        raise PlanError(f"prompt templates {path!r}: `syntax` must be one of {SYNTAXES}")
    if data.setdefault("seed_fields", "stripped") not in SEED_FIELDS:
        raise PlanError(f"prompt templates {path!r}: `seed_fields` must be one of {SEED_FIELDS}")
    return data


def read_set(path: str) -> dict:
    """The whole template set file at `path` (cached; do not modify the result)."""
    stat = os.stat(path)
    return _read(path, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class Block:
    """The templates one source uses: a family's variant in a template set."""

    set: str
    syntax: str
    seed_fields: str
    family: str
    variant: str
    options: dict  # the variant's keys other than `entries` (builder options, provenance)
    entries: dict  # style or audience -> entry, in the file's order

    def identity(self) -> dict:
        """What the prompts of this block depend on (its hash reruns them)."""
        return {
            "set": self.set,
            "syntax": self.syntax,
            "seed_fields": self.seed_fields,
            "variant": self.variant,
            "options": self.options,
            "entries": self.entries,
        }


def variants(path: str, family: str) -> list[str]:
    """The variant names of `family` in the set at `path`."""
    return list(_variants(path, family))


def _variants(path: str, family: str) -> dict:
    data = read_set(path)
    if family not in data["families"]:
        raise PlanError(
            f"prompt templates {path!r} (set {data['set']}) have no block for seed family "
            f"{family!r} (it has: {', '.join(data['families'])})"
        )
    block = data["families"][family]
    if not isinstance(block, dict) or ("entries" in block) == ("variants" in block):
        raise PlanError(
            f"prompt templates {path!r}: families.{family} needs either `entries` (one "
            "variant) or `variants` (named variants, each with `entries`)"
        )
    if "entries" in block:
        return {DEFAULT_VARIANT: block}
    if not isinstance(block["variants"], dict) or not block["variants"]:
        raise PlanError(f"prompt templates {path!r}: families.{family}.variants is empty")
    return block["variants"]


def load_block(path: str, family: str, variant: str | None = None) -> Block:
    """The block of `family` (its `variant`: may be omitted when the family has one)."""
    data = read_set(path)
    found = _variants(path, family)
    if variant is None:
        if len(found) > 1:
            raise PlanError(
                f"prompt templates {path!r}: family {family} has several variants "
                f"({', '.join(found)}): choose one with sources.<name>.variant"
            )
        variant = next(iter(found))
    if variant not in found:
        raise PlanError(
            f"prompt templates {path!r} (set {data['set']}): family {family} has no variant "
            f"{variant!r} (it has: {', '.join(found)})"
        )
    body = copy.deepcopy(found[variant])
    entries = body.pop("entries", None)
    if not isinstance(entries, dict):
        raise PlanError(f"prompt templates {path!r}: {family}.{variant}: `entries` missing")
    return Block(
        set=data["set"],
        syntax=data["syntax"],
        seed_fields=data["seed_fields"],
        family=family,
        variant=variant,
        options=body,
        entries=entries,
    )


def load_family(path: str, family: str, variant: str | None = None) -> dict:
    """The entries of `family` in the set at `path` (a copy)."""
    return load_block(path, family, variant).entries
