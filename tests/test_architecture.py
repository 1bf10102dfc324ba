"""The package's shape: no import cycles, no function defined twice, one home per path."""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cosmopedia"
# Every step module has these by the CLI's contract (cosmopedia/cli.py).
CLI_CONTRACT = {"main", "add_arguments"}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Modules of the package this one imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycles():
    mods = modules()
    graph = {name: imports(tree, set(mods)) - {name} for name, tree in mods.items()}
    # A package imports its own modules through __init__ only for re-exports: skip those.
    graph = {n: {d for d in deps if not n.startswith(f"{d}.")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_function_defined_twice():
    where = defaultdict(list)
    for name, tree in modules().items():
        for node in tree.body:
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and node.name not in CLI_CONTRACT and not node.name.endswith("_main"):
                where[node.name].append(name)
    twice = {f: m for f, m in where.items() if len(m) > 1}
    assert not twice, f"functions defined in several modules: {twice}"


def test_paths_of_results_live_in_layout():
    """Folder names of the results tree appear as path literals only in layout.py."""
    names = ("generations/", "minhash/", "decontam/", "dataset/", "logs/", "runtimes/")
    counts = Counter()
    for path in SRC.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and text.startswith(names):
                counts[f"{path.name}:{node.lineno}: {text!r}"] += 1
    assert not counts, f"results paths outside layout.py: {sorted(counts)}"
