"""Reruns at scale: which jobs run after one seed shard changes.

The real workflow on bench/cosmopedia-scale.yaml with --shards seed shards (300 by
default), run as bench/dag.py simulates it: a real Snakemake run (its DAG, rerun
decisions, params and metadata) whose shell commands are replaced in-process. Here every
stand-in writes content: each output's bytes are a digest of the job's inputs and params,
so an output changes exactly when what feeds it changes. The minhash_cluster stand-in also
writes every shard's removal files (minhash/remove/<source>/<shard>.remove and
.previous) from that shard's signatures, rewriting a file only when its bytes change, as
`cosmopedia minhash-cluster` does: a shard's removals change when its own documents
change (the common case), and with --cross K also those of the K shards after it (a new
near-duplicate pair across shards).

Steps: a full simulated run; one seed file of the first source changed; a dry-run (what
Snakemake plans before the cluster job has run, an upper bound); the run; the jobs that
ran, per rule, and how many shards' dedup/decontam folders changed (mtime).

    .venv/bin/python bench/rerun.py                    # 300 shards, about 5 minutes on 2 cores
    .venv/bin/python bench/rerun.py --shards 60 --cross 2 --json rerun.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dag  # noqa: E402  (bench/dag.py: the scale config, the seed files, Snakemake calls)

SNAKEFILE = dag.SNAKEFILE
RESULTS = Path("results/cosmopedia-scale/v0.1")
PER_SHARD_RULES = (
    "ingest", "prompts", "generate", "clean", "minhash_signature", "minhash_filter",
    "decontaminate",
)  # fmt: skip
FINISHED = re.compile(r"Finished jobid: \d+ \(Rule: (\w+)\)")


# --- the stand-ins (self-invoked: `rerun.py _simulate <snakemake args>`) -----------------


def digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes)."""
    h = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if file.name != ".snakemake_timestamp":
                h.update(f"{file.relative_to(path)}\0".encode())
                h.update(file.read_bytes())
    elif path.exists():
        h.update(path.read_bytes())
    return h.hexdigest()


def write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_removals(plan_file: str) -> None:
    """The cluster stand-in's per-shard files: from the shard's signatures (and, for the
    shards BENCH_CROSS names, also from another shard's)."""
    from cosmopedia import layout

    root = layout.plan_root(plan_file)
    cross: dict[str, str] = json.loads(os.environ.get("BENCH_CROSS", "{}"))
    entries = json.loads(Path(plan_file).read_text())["shards"]
    signatures = {
        f"{e['source']}/{e['shard']}": digest(
            Path(layout.shard_path(root, "signatures", e["source"], e["shard"]))
        )
        for e in entries
    }
    for key, sig in signatures.items():
        source, shard = key.split("/")
        other = signatures.get(cross.get(key, ""), "")
        removals = hashlib.sha256(f"remove {sig} {other}".encode()).digest()[:8]
        write_if_changed(Path(layout.shard_path(root, "remove", source, shard)), removals)
        write_if_changed(Path(layout.shard_path(root, "remove_previous", source, shard)), b"")


def simulate(argv: list[str]) -> None:
    """Snakemake with every shell command replaced by writing its outputs' digests."""
    import importlib
    import inspect
    import threading

    from snakemake.io import is_flagged

    shell_module = importlib.import_module("snakemake.shell")
    original_new = shell_module.shell.__new__
    executed = os.environ.get("BENCH_EXECUTED")
    lock = threading.Lock()

    def fake_new(cls, cmd, *args, iterable=False, read=False, bench_record=None, **kwargs):
        frame = inspect.currentframe().f_back
        context = frame.f_locals
        if not context.get(shell_module.RULEFUNC_CONTEXT_MARKER):
            return original_new(
                cls, cmd, *args, iterable=iterable, read=read, bench_record=bench_record, **kwargs
            )
        rule = frame.f_globals["workflow"].get_rule(context["rule"])
        h = hashlib.sha256(rule.name.encode())
        for path in context["input"]:
            h.update(digest(Path(path)).encode())
        h.update(json.dumps([str(p) for p in context["params"]]).encode())
        content = h.hexdigest().encode()
        for path, declared in zip(context["output"], rule.output, strict=True):
            if is_flagged(declared, "directory"):
                os.makedirs(path, exist_ok=True)
                if rule.name != "minhash_cluster":
                    write_if_changed(Path(path) / "content", content)
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_bytes(content)
        if rule.name == "minhash_cluster":
            write_removals(context["input"].plan)
        for path in context["log"]:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch()
        if bench_record is not None:
            bench_record.running_time = 0.0
            bench_record.process_gone = True
        if executed:
            with lock, open(executed, "a") as f:
                f.write(json.dumps({"rule": rule.name, **dict(context["wildcards"])}) + "\n")
        return None

    shell_module.shell.__new__ = staticmethod(fake_new)
    from snakemake.cli import main

    sys.argv = ["snakemake", *argv]
    main()


def simulated_run(workdir: Path, *args: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_simulate"]
    cmd += dag.snakemake(SNAKEFILE, workdir, "--cores", "2", *dag.FAST, *args)[1:]
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        result = dag.run_timed(cmd)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if result["rc"] != 0:
        raise SystemExit(f"simulated run failed in {workdir}:\n{result['out'][-4000:]}")
    return result


# --- the benchmark -----------------------------------------------------------------------


def folder_mtimes(workdir: Path, stage: str) -> dict[str, int]:
    """mtime of every shard's file in a step's folder (the stand-in writes `content`)."""
    base = workdir / RESULTS / stage
    files = sorted(base.glob("*/*/content"))
    return {str(p.parent.relative_to(base)): p.stat().st_mtime_ns for p in files}


def change_seed(workdir: Path) -> tuple[str, Path]:
    """Change the bytes of the first seed file of the first source (its sha256 changes)."""
    source = next(iter(dag.SOURCE_SHARDS))
    path = sorted((workdir / "seeds" / source).iterdir())[0]
    path.write_bytes(path.read_bytes() + b"changed\n")
    return f"{source}/{path.name.removesuffix('.parquet')}", path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_simulate"]:
        simulate(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=300, help="seed shards (default 300)")
    parser.add_argument(
        "--cross", type=int, default=0, help="other shards whose removals change (default 0)"
    )
    parser.add_argument("--workdir", help="keep the working directory here")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    base = Path(args.workdir or tempfile.mkdtemp(prefix="cosmopedia-rerun-"))
    workdir = base / "real"
    results: dict = {"shards": args.shards, "cross": args.cross}
    try:
        if workdir.exists():
            shutil.rmtree(workdir)
        dag.make_real(workdir, args.shards)
        keys = sorted(
            f"{s}/{p.name.removesuffix('.parquet')}"
            for s in dag.SOURCE_SHARDS
            for p in (workdir / "seeds" / s).iterdir()
        )
        first_source = next(iter(dag.SOURCE_SHARDS))
        changed_key = min(k for k in keys if k.startswith(f"{first_source}/"))
        after = [k for k in keys if k != changed_key][: args.cross]
        cross = {"BENCH_CROSS": json.dumps(dict.fromkeys(after, changed_key))}
        dag.log(f"simulated run of {args.shards} shards in {workdir}")
        first = simulated_run(workdir, "--quiet", "all", env=cross)
        results["first_run_seconds"] = round(first["wall"], 1)
        before = {stage: folder_mtimes(workdir, stage) for stage in ("dedup", "decontam")}

        key, path = change_seed(workdir)
        assert key == changed_key, (key, changed_key)
        dag.log(f"changed {path.relative_to(workdir)}")
        planned = dag.dry_run(SNAKEFILE, workdir)
        results["changed"] = key
        results["dry_run"] = {"seconds": round(planned["wall"], 1)} | dag.job_stats(planned["out"])
        executed_file = base / "executed.jsonl"
        executed_file.unlink(missing_ok=True)
        run = simulated_run(workdir, env=cross | {"BENCH_EXECUTED": str(executed_file)})
        counts: dict[str, int] = {}
        for rule in FINISHED.findall(run["out"]):
            counts[rule] = counts.get(rule, 0) + 1
        results["executed"] = dict(sorted(counts.items())) | {"total": sum(counts.values())}
        jobs = [json.loads(line) for line in executed_file.read_text().splitlines()]
        results["executed_shards"] = {
            rule: sorted(f"{j['source']}/{j['shard']}" for j in jobs if j["rule"] == rule)
            for rule in PER_SHARD_RULES
        }
        now = {stage: folder_mtimes(workdir, stage) for stage in ("dedup", "decontam")}
        results["folders_rewritten"] = {
            stage: sorted(k for k, t in now[stage].items() if before[stage].get(k) != t)
            for stage in now
        }
        results["expected_filter_shards"] = sorted([key, *after])
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)

    print_summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_summary(results: dict) -> None:
    print(
        f"\n{results['shards']} shards; changed seed shard {results['changed']}; removals "
        f"also change in {results['cross']} other shard(s)"
    )
    planned = {k: v for k, v in results["dry_run"].items() if k != "seconds"}
    print(f"dry-run ({results['dry_run']['seconds']} s) plans: {planned}")
    print(f"executed: {results['executed']}")
    for rule, shards in results["executed_shards"].items():
        if rule in ("minhash_filter", "decontaminate"):
            shown = ", ".join(shards[:5]) + (" ..." if len(shards) > 5 else "")
            print(f"  {rule}: {len(shards)} shard(s): {shown}")
    for stage, keys in results["folders_rewritten"].items():
        print(f"  {stage} folders rewritten: {len(keys)} of {results['shards']}")
    print(f"  shards whose removals or content changed: {results['expected_filter_shards']}")
    n = results["shards"]
    filtered = sum(len(results["executed_shards"][r]) for r in ("minhash_filter", "decontaminate"))
    print(
        f"before local reruns (every filter job depended on the cluster output): {n} "
        f"minhash_filter + {n} decontaminate = {2 * n} jobs; now {filtered}"
    )


if __name__ == "__main__":
    sys.exit(main())
