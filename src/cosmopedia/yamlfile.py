"""YAML files that can't lie: a duplicated key is an error (PyYAML keeps the last one
silently, so a source declared twice would vanish), and every error names the file, line
and column. Used for config files, prompt templates and settings files. A leaf module.
"""

from __future__ import annotations

import os

import yaml

from cosmopedia.errors import CliError

# libyaml's parser when PyYAML has it (the Python one takes ~10x longer on the v0.1
# template set, and planning reads config and templates in every Snakemake process).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """PyYAML's safe loader whose mappings refuse a key given twice."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)  # YAML merge keys (<<) first, as SafeLoader does
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            first = seen[key]
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first at line {first.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return _SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def where(mark, path: str | os.PathLike) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def parse(text: str, path: str | os.PathLike = "<string>"):
    """Parse YAML text; a syntax error or duplicate key is a CliError naming path:line:col."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = where(mark, path) if mark is not None else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise CliError(f"{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: invalid YAML: {exc}") from None


def read(path: str | os.PathLike):
    """Parse the YAML file at `path` (see `parse`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse(text, path)
