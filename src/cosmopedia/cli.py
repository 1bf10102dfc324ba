"""Command line of the workflow: one subcommand per step, called by the Snakemake rules.

Handlers import their modules lazily so that `cosmopedia --help` and light steps stay fast
(datatrove and spaCy take a second or two to import).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

# subcommand -> (module, function, help); each module has `add_arguments(name, parser)`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ingest": ("cosmopedia.ingest", "main", "Seed source file -> seed shard (Parquet, stable ids)"),
    "prompts": ("cosmopedia.prompts", "main", "Seed shard -> prompts shard"),
    "serve-dummy": ("cosmopedia.engines.dummy", "main", "Run the dummy TGI-protocol engine"),
    "generate": ("cosmopedia.generate", "main", "Prompts shard -> generations (engine sidecar)"),
    "clean": ("cosmopedia.clean", "main", "Generations -> cleaned rows + dropped rows"),
    "minhash-signature": ("cosmopedia.minhash", "signature_main", "MinHash signatures of a shard"),
    "minhash-buckets": ("cosmopedia.minhash", "buckets_main", "Duplicate pairs of one bucket"),
    "minhash-cluster": ("cosmopedia.minhash", "cluster_main", "Clusters -> per-shard removals"),
    "minhash-filter": ("cosmopedia.minhash", "filter_main", "Drop a shard's duplicates"),
    "benchmarks-download": (
        "cosmopedia.benchmarks",
        "download_main",
        "One Hub benchmark at its pinned revision -> items (.parquet)",
    ),
    "benchmarks": ("cosmopedia.benchmarks", "main", "Benchmark items -> Parquet + N-gram index"),
    "decontaminate": ("cosmopedia.decontam", "main", "Drop rows overlapping benchmark items"),
    "decontam-summary": ("cosmopedia.decontam", "summary_main", "Per-benchmark decontam summary"),
    "dataset": ("cosmopedia.dataset", "main", "Final Cosmopedia-schema files + manifest"),
    "report-plots": ("cosmopedia.report", "main", "Plots and tables for snakemake --report"),
    "publish": ("cosmopedia.release", "main", "Check a release and upload it to the Hub"),
    "verify": ("cosmopedia.verify", "main", "Rebuild a version from its manifest and compare"),
    "metadata": (
        "cosmopedia.io",
        "metadata_main",
        "Show what a shard's Parquet metadata records (ingest: rows read, kept, bad rows)",
    ),
}


class CliError(Exception):
    """An error whose message is the whole story for the user (no traceback needed)."""


def add_plan_arguments(parser, listed: str, metavar: str, what: str) -> None:
    """Per-shard inputs of an aggregate step: listed (`--<listed>`) or every planned shard's,
    found through the shard plan (`--plan`). The workflow passes the plan: at 3,000 shards
    a list runs to hundreds of KB of command line."""
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument(f"--{listed}", nargs="+", metavar=metavar, help=what)
    given.add_argument("--plan", help="shard plan (<root>/plan/shards.json): every shard's")
    parser.add_argument("--root", help="results root with --plan (default: the plan's)")


def read_plan(plan: str, root: str | None) -> tuple[str, list[dict]]:
    """The results root (`root`, or the one holding the plan) and the shard plan's entries."""
    from cosmopedia import layout
    from cosmopedia.io import read_json

    try:
        root = root or layout.plan_root(plan)
    except ValueError as exc:
        raise CliError(f"--plan {exc}; give --root") from None
    return root, read_json(plan)["shards"]


def plan_paths(plan: str, root: str | None, stage: str) -> dict[str, str]:
    """{source}/{shard} -> the file of `stage` of every shard in the plan file."""
    from cosmopedia import layout

    root, entries = read_plan(plan, root)
    return layout.plan_stage_paths(entries, root, stage)


def require_columns(df, path, columns) -> None:
    """A table read from `path` has these columns, without nulls."""
    for column in columns:
        if column not in df.columns:
            raise CliError(f"{path}: missing column {column!r}")
        if df[column].null_count():
            raise CliError(f"{path}: null values in column {column!r}")


def load_settings(value: str) -> dict:
    """`--settings` takes JSON, or @path to a JSON/YAML file (for running a step by hand)."""
    if value.startswith("@"):
        path = Path(value[1:])
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        return json.loads(text)
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise CliError(f"--settings is not valid JSON: {exc}") from exc


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cosmopedia", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    for name, (module_name, func_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_handler=(module_name, func_name))
        # Only the chosen step's module is imported: steps stay quick to start.
        if name in argv:
            importlib.import_module(module_name).add_arguments(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    module_name, func_name = args._handler
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except Exception as exc:  # the last line of the job's log says what to do
        known = isinstance(exc, CliError)
        logging.getLogger("cosmopedia").error("%s", exc, exc_info=not known)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"cosmopedia {args.command} failed: {reason}. Fix the input/config and rerun "
              "snakemake; finished work is kept.", file=sys.stderr)  # fmt: skip
        return 2 if known else 1


if __name__ == "__main__":
    sys.exit(main())
