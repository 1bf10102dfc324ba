"""Command line of the workflow: one subcommand per step, called by the Snakemake rules.

Handlers import their modules lazily so that `cosmopedia --help` and light steps stay fast
(datatrove and spaCy take a second or two to import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, function, help); each module has `add_arguments(name, parser)`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ingest": ("cosmopedia.ingest", "main", "Seed source file -> seed shard (Parquet, stable ids)"),
    "prompts": ("cosmopedia.prompts", "main", "Seed shard -> prompts shard"),
    "serve-dummy": (
        "cosmopedia.generation.dummy.server",
        "main",
        "Run the dummy engine (TGI and OpenAI-compatible protocols)",
    ),
    "generate": (
        "cosmopedia.generation.runner",
        "main",
        "Prompts shard -> generations (engine sidecar)",
    ),
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
    "forecast": (
        "cosmopedia.forecast",
        "main",
        "GPU-hours generation will take, per source and in total (before or during a run)",
    ),
    "publish": ("cosmopedia.release", "main", "Check a release and upload it to the Hub"),
    "verify": ("cosmopedia.verify", "main", "Rebuild a version from its manifest and compare"),
    "check-config": (
        "cosmopedia.plan",
        "check_config_main",
        "Check a config file as planning does (YAML line and column, schema, shards)",
    ),
    "lock": (
        "cosmopedia.lock",
        "main",
        "Pin (or --check) a config's Hub revisions and data file lists from the Hub",
    ),
    "metadata": (
        "cosmopedia.io",
        "metadata_main",
        "Show what a shard's Parquet metadata records (ingest: rows read, kept, bad rows)",
    ),
}


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
    from cosmopedia import redact

    handler = logging.StreamHandler(sys.stderr)
    # Every line of a job's log without secrets (URL credentials, tokens: cosmopedia.redact).
    handler.setFormatter(redact.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    module_name, func_name = args._handler
    handler = getattr(importlib.import_module(module_name), func_name)
    from cosmopedia.errors import CliError

    try:
        return int(handler(args) or 0)
    except Exception as exc:  # the last line of the job's log says what to do
        known = isinstance(exc, CliError)
        logging.getLogger("cosmopedia").error("%s", exc, exc_info=not known)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = redact.text(reason)
        print(f"cosmopedia {args.command} failed: {reason}. Fix the input/config and rerun "
              "snakemake; finished work is kept.", file=sys.stderr)  # fmt: skip
        return 2 if known else 1


if __name__ == "__main__":
    sys.exit(main())
