"""cosmopedia lock: pin the Hub revisions and data file lists of a config, or check them.

Planning never touches the network, so a config lists each Hub source's commit and files
(config/cosmopedia.yaml). This command asks the Hub (huggingface_hub's HfApi) and, for
every Hub source (and the generation model):

- revision: a placeholder or a branch/tag becomes the commit it points to (a placeholder:
  `main`'s); a commit sha is checked to exist;
- data_files: with `hub.data_files_glob`, the repository's files at that commit matching
  the glob (sorted); without it, the listed files are checked to exist there.

Without --check it writes the values into the config file, editing only those lines
(comments and layout stay). With --check it changes nothing and exits 1 on any difference,
each one printed. HF_TOKEN from the environment is used for private or gated repositories.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import sys
from pathlib import Path

import yaml

from cosmopedia.errors import CliError
from cosmopedia.plan import PLACEHOLDER

log = logging.getLogger("cosmopedia.lock")
COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_api():
    """The Hub client (a function, so tests hand in a recorded listing instead)."""
    from huggingface_hub import HfApi

    return HfApi()


def _resolve(info, repo_id: str, revision: str, kind: str) -> tuple[str, str | None]:
    """(commit, problem) of a revision: a placeholder resolves main."""
    asked = "main" if PLACEHOLDER in revision else revision
    try:
        sha = info(repo_id, revision=asked).sha
    except Exception as exc:  # not found, gated, network: say which
        return revision, f"{kind} {repo_id}: revision {asked!r} not found ({type(exc).__name__})"
    return sha, None


def lock_source(api, name: str, hub: dict) -> tuple[dict, list[str]]:
    """The pinned {revision, data_files} of one Hub source, and the problems found."""
    repo_id, revision = hub["repo_id"], hub["revision"]
    sha, problem = _resolve(api.dataset_info, repo_id, revision, "dataset")
    if problem:
        return {"revision": revision, "data_files": hub["data_files"]}, [f"{name}: {problem}"]
    problems = []
    if sha != revision:
        problems.append(f"{name}: revision {revision!r} is commit {sha}")
    files = api.list_repo_files(repo_id, repo_type="dataset", revision=sha)
    glob = hub.get("data_files_glob")
    if glob:
        wanted = sorted(f for f in files if fnmatch.fnmatchcase(f, glob))
        if not wanted:
            problems.append(f"{name}: no file of {repo_id}@{sha[:7]} matches {glob!r}")
            wanted = hub["data_files"]
    else:
        wanted = hub["data_files"]
        present = set(files)
        problems += [
            f"{name}: {f} is not in {repo_id}@{sha[:7]}" for f in wanted if f not in present
        ]
    if wanted != hub["data_files"]:
        listed, found = set(hub["data_files"]), set(wanted)
        added, gone = sorted(found - listed), sorted(listed - found)
        detail = f"{len(added)} to add (e.g. {added[:2]}), {len(gone)} to drop (e.g. {gone[:2]})"
        problems.append(
            f"{name}: data_files differ from {repo_id}@{sha[:7]} ({glob}): "
            + (detail if added or gone else "order")
        )
    return {"revision": sha, "data_files": wanted}, problems


def lock_model(api, generation: dict) -> tuple[str, list[str]]:
    model, revision = generation["model"], generation["revision"]
    if "/" not in model:  # a local folder or the dummy model: nothing on the Hub
        return revision, []
    sha, problem = _resolve(api.model_info, model, revision, "model")
    if problem:
        return revision, [f"generation: {problem}"]
    return sha, [] if sha == revision else [f"generation: revision {revision!r} is commit {sha}"]


# --- editing the config text ----------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _block(lines: list[str], start: int) -> int:
    """The end (exclusive) of the block under key line `start`: the lines indented deeper
    (and list items at its own indentation), without the blank or comment lines after it."""
    own = _indent(lines[start])
    end = start + 1
    while end < len(lines) and (
        not _is_content(lines[end])
        or _indent(lines[end]) > own
        or (_indent(lines[end]) == own and lines[end].lstrip().startswith("- "))
    ):
        end += 1
    while end > start + 1 and not _is_content(lines[end - 1]):
        end -= 1
    return end


def _find_key(lines: list[str], key: str, start: int, end: int) -> int | None:
    """The first line in [start, end) holding `key:` at the first indentation of the block."""
    pattern = re.compile(rf"^(\s*){re.escape(key)}:(\s|$)")
    depth = None
    for i in range(start, end):
        if not _is_content(lines[i]):
            continue
        depth = _indent(lines[i]) if depth is None else depth
        if _indent(lines[i]) == depth and pattern.match(lines[i]):
            return i
    return None


def _path(lines: list[str], keys: list[str]) -> tuple[int, int]:
    """(line, block end) of a nested key, e.g. [sources, stanford, hub]."""
    start, end = 0, len(lines)
    line = None
    for key in keys:
        line = _find_key(lines, key, start, end)
        if line is None:
            raise CliError(f"cannot find {'.'.join(keys)} in the config text: edit it by hand")
        start, end = line + 1, _block(lines, line)
    return line, end


def _set_scalar(lines: list[str], keys: list[str], value: str) -> None:
    line, _ = _path(lines, keys)
    match = re.match(r"^(\s*[^:]+:\s*)(\"[^\"]*\"|'[^']*'|[^\s#]+)(.*)$", lines[line])
    if not match:
        raise CliError(f"cannot edit {'.'.join(keys)} in the config text: edit it by hand")
    lines[line] = f"{match.group(1)}{value}{match.group(3)}"


def _set_list(lines: list[str], keys: list[str], values: list[str]) -> None:
    """Replace a list value (block or flow style) by a block list of `values`."""
    line, end = _path(lines, keys)
    head = re.match(r"^(\s*[^:#]+:)\s*(\[[^\]]*\])?\s*(#.*)?$", lines[line])
    if not head:
        raise CliError(f"cannot edit {'.'.join(keys)} in the config text: edit it by hand")
    items = [i for i in range(line + 1, end) if lines[i].lstrip().startswith("- ")]
    pad = " " * (_indent(lines[items[0]]) if items else _indent(lines[line]) + 2)
    comment = f"  {head.group(3)}" if head.group(3) else ""
    lines[line:end] = [f"{head.group(1)}{comment}"] + [f"{pad}- {_scalar(v)}" for v in values]


def _scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when it reads back the same, else double-quoted."""
    return value if yaml.safe_load(f"- {value}") == [value] else json.dumps(value)


def edit(text: str, sources: dict[str, dict], model_revision: str | None) -> str:
    lines = text.split("\n")
    for name, pinned in sources.items():
        _set_scalar(lines, ["sources", name, "hub", "revision"], pinned["revision"])
        _set_list(lines, ["sources", name, "hub", "data_files"], pinned["data_files"])
    if model_revision is not None:
        _set_scalar(lines, ["generation", "revision"], model_revision)
    return "\n".join(lines)


# --- command --------------------------------------------------------------------------------


def add_arguments(name, parser):
    parser.add_argument("--configfile", required=True, help="the config to pin (YAML)")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 on any difference"
    )
    parser.add_argument(
        "--source", action="append", help="only this source (repeatable); default: all"
    )


def main(args) -> int:
    path = Path(args.configfile)
    try:
        text = path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"--configfile {path}: {exc}") from exc
    hub_sources = {
        name: spec["hub"]
        for name, spec in sorted((config.get("sources") or {}).items())
        if "hub" in spec and (not args.source or name in args.source)
    }
    if unknown := set(args.source or ()) - set(hub_sources):
        raise CliError(f"--source: no Hub source named {', '.join(sorted(unknown))}")
    api = hub_api()
    pinned, problems = {}, []
    for name, hub in hub_sources.items():
        pinned[name], found = lock_source(api, name, hub)
        problems += found
    model_revision, found = None, []
    if not args.source and "generation" in config:
        model_revision, found = lock_model(api, config["generation"])
        problems += found
    for problem in problems:
        print(problem, file=sys.stdout)
    if args.check:
        print(
            f"{path}: {'differs' if problems else 'matches'} the Hub ({len(hub_sources)} sources)"
        )
        return 1 if problems else 0
    new = edit(text, pinned, model_revision)
    loaded = yaml.safe_load(new)
    for name, values in pinned.items():
        hub = loaded["sources"][name]["hub"]
        if (hub["revision"], hub["data_files"]) != (values["revision"], values["data_files"]):
            raise CliError(f"editing sources.{name}.hub went wrong: edit it by hand")
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"{path}: pinned ({len(problems)} change(s) or problem(s) above)")
    else:
        print(f"{path}: already pinned")
    unresolved = [p for p in problems if "not found" in p or "no file" in p or "is not in" in p]
    return 1 if unresolved else 0
