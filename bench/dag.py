"""Planning and scheduling benchmark of the workflow at Cosmopedia scale.

1. DAG: dry-run time of the real workflow on bench/cosmopedia-scale.yaml (3,000 seed
   shards of ~10k prompts; the seed files are empty, a dry-run never reads them) against
   a bare Snakemake chain with the same number of jobs and the same shape (the same
   per-shard chain length, bucket fan-in and aggregate jobs, but plain `touch` rules
   without params, logs, benchmarks or input functions), measured in the same run; and
   against a second bare chain whose steps declare as many outputs, logs and benchmark
   files as the real rules (read from a forced dry-run of a small copy): Snakemake's
   bookkeeping costs per declared file, and this ratio shows what the workflow costs
   beyond it (input functions, params, shell commands...). The target (<= 1.5) is
   against the plain chain;
   - outputs absent: nothing has run yet;
   - outputs present: after a simulated run of each workflow. The simulated run is a
     real Snakemake run whose shell commands are replaced in-process by creating the
     job's outputs and logs (and, for minhash_cluster, each shard's removal files), so
     Snakemake records its real metadata (code, params, input) and the dry-run
     afterwards does what it does after a real run.
2. Command lines: the longest shell command of every rule at that scale, against the
   Linux limits (one argument <= 128 KiB, MAX_ARG_STRLEN; all arguments + environment
   <= ARG_MAX). Snakemake itself runs commands over 64 KiB from a script file instead of
   `bash -c <command>`, so only single arguments and the argv total matter.
3. Execution: jobs finished per second for a chain of trivial jobs (`touch`) under the
   candidate scheduler settings, each run cut after --exec-seconds.

Run from the repository root (about 30 minutes on 2 busy cores at 3,000 shards, most
of it the three simulated runs of 21k jobs):

    .venv/bin/python bench/dag.py --json dag.json      # everything, 3,000 shards
    .venv/bin/python bench/dag.py --shards 300 --repeats 1 --exec-seconds 10  # ~4 min
    .venv/bin/python bench/dag.py --shards 300 --skip-exec --bucket-jobs 14  # 14 buckets jobs

`--workdir DIR` keeps (and reuses) the working directories, e.g. to measure "present"
again with `--skip-absent`; `--snakefile` measures a copy of workflow/ (the simulated
run records code and params: edits to the rules in between make jobs due again).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
SCALE_CONFIG = REPO / "bench" / "cosmopedia-scale.yaml"
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")

# Shards per source: Cosmopedia v0.1's subsets in ~10k-prompt shards (3,000 in all).
SOURCE_SHARDS = {
    "web_v1": 1246,  # web_samples_v1, 12.4M
    "web_v2": 1030,  # web_samples_v2, 10.3M
    "auto_math_text": 190,  # 1.9M
    "wikihow": 18,  # 179k
    "stories": 400,  # 4M
    "stanford": 100,  # 1M
    "openstax": 13,  # 126k
    "khanacademy": 3,  # 24k
}
MAX_ARG_STRLEN = 32 * 4096  # Linux: one argv/env string
SNAKEMAKE_SCRIPT_ABOVE = 16 * 4096 - 1  # snakemake.shell.MAX_ARG_LEN

SCHEDULERS = {
    "ilp (default)": [],
    "ilp + subsample 100": ["--scheduler-subsample", "100"],
    "greedy": ["--scheduler", "greedy"],
    "greedy + subsample 100": ["--scheduler", "greedy", "--scheduler-subsample", "100"],
}
# Settings of the simulated runs that make the "present" state (fastest, see part 3).
FAST = SCHEDULERS["greedy + subsample 100"]


# Marks a working directory that holds a simulated run's outputs (outputs present).
SIMULATED = ".simulated"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def run_timed(cmd: list[str], timeout: float | None = None) -> dict:
    """Run `cmd`; wall and CPU seconds (user + sys of the child), output, return code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "out": out, "rc": proc.returncode, "timed_out": timed_out}


def snakemake(snakefile: Path, workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), *args]


def job_stats(output: str) -> dict[str, int]:
    """The last 'Job stats' table of a Snakemake output: rule -> jobs."""
    tables = output.split("Job stats:")
    if len(tables) < 2:
        return {}
    stats = {}
    for line in tables[-1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats


# --- the two workflows ------------------------------------------------------------------


def shard_counts(total: int) -> dict[str, int]:
    full = sum(SOURCE_SHARDS.values())
    counts = {s: max(1, round(n * total / full)) for s, n in SOURCE_SHARDS.items()}
    counts["web_v1"] += total - sum(counts.values())
    if counts["web_v1"] < 1:
        raise SystemExit(f"{total} shards are too few for {len(SOURCE_SHARDS)} sources")
    return counts


def make_real(workdir: Path, shards: int, bucket_jobs: int = 1) -> None:
    workdir.mkdir(parents=True)
    shutil.copytree(REPO / "resources", workdir / "resources")
    (workdir / "config").mkdir()
    shutil.copy(SCALE_CONFIG, workdir / "config" / "config.yaml")
    if bucket_jobs != 1:  # the MinHash buckets in that many jobs
        with open(workdir / "config" / "config.yaml", "a", encoding="utf-8") as f:
            f.write(f"\nminhash:\n  bucket_jobs: {bucket_jobs}\n")
    for source, n in shard_counts(shards).items():
        folder = workdir / "seeds" / source
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{source}-{i:05d}.parquet").touch()


BARE_SNAKEFILE = """\
# Bare chain: the real workflow's DAG shape with plain rules.
SHARDS = [f"s{{i:05d}}" for i in range({shards})]
K, SIG, B = {steps}, {sig}, {buckets}


rule all:
    input:
        "final.txt",
        "report.txt",
        {extra_targets}


rule plan:
    output:
        "plan.txt",
    shell:
        "touch {{output}}"


rule step1:
    input:
        "seeds/{{shard}}.txt",
{step1}
{chain}

rule bucket:
    input:
        expand("step{{k}}/{{shard}}.txt", k=SIG, shard=SHARDS),
    output:
        "buckets/{{b}}.txt",
    shell:
        "touch {{output}}"


rule cluster:
    input:
        expand("buckets/{{b}}.txt", b=range(B)),
    output:
        "cluster.txt",
    shell:
        "touch {{output}}"


rule final:
    input:
        "plan.txt",
        expand("step{{k}}/{{shard}}.txt", k=range(1, K + 1), shard=SHARDS),
    output:
        "final.txt",
    shell:
        "touch {{output}}"


rule report:
    input:
        "final.txt",
        expand("step{{k}}/{{shard}}.txt", k=K, shard=SHARDS),
    output:
        "report.txt",
    shell:
        "touch {{output}}"

{extras}
"""


def make_bare(
    workdir: Path,
    shards: int,
    steps: int,
    buckets: int,
    singles: int,
    declared: list[dict[str, int]] | None = None,
) -> None:
    """Same job count as the real DAG: `steps` jobs per shard, `buckets` fan-in jobs, and
    `singles` one-off jobs (plan, cluster, final, report, all, plus chained extras).

    `declared` (one entry per step, in chain order): the outputs, logs and benchmark files
    the real rule at that position declares; each step then declares as many (and touches
    them). Without it every step has one output and nothing else."""
    sig = steps - 2  # signatures feed the buckets; the next step also needs the cluster
    chain = []
    for k in range(2, steps + 1):
        extra = '        "cluster.txt",\n' if k == sig + 1 else ""
        chain.append(
            f'rule step{k}:\n    input:\n        "step{k - 1}/{{shard}}.txt",\n{extra}'
            f"{step_files(k, declared)}"
        )
    n_extra = singles - 5
    if n_extra < 0:
        raise SystemExit(f"the real DAG has {singles} one-off jobs; the bare chain needs 5")
    extras = [
        f'rule extra{i}:\n    input:\n        "{f"extra{i - 1}.txt" if i else "report.txt"}",\n'
        f'    output:\n        "extra{i}.txt",\n    shell:\n        "touch {{output}}"\n'
        for i in range(n_extra)
    ]
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(
        BARE_SNAKEFILE.format(
            shards=shards, steps=steps, sig=sig, buckets=buckets, chain="\n\n".join(chain),
            extras="\n\n".join(extras), step1=step_files(1, declared),
            extra_targets=f'"extra{n_extra - 1}.txt",' if n_extra else "",
        )
    )  # fmt: skip
    (workdir / "seeds").mkdir()
    for i in range(shards):
        (workdir / "seeds" / f"s{i:05d}.txt").touch()


def step_files(k: int, declared: list[dict[str, int]] | None) -> str:
    """The output/log/benchmark/shell part of chain step k (a rule body, indented)."""
    files = declared[k - 1] if declared else {"output": 1, "log": 0, "benchmark": 0}
    outputs = [f"step{k}/{{shard}}.txt"]
    outputs += [f"step{k}/{{shard}}.{j}.txt" for j in range(1, files["output"])]
    logs = [f"logs/step{k}/{{shard}}.{j}.log" for j in range(files["log"])]
    text = "    output:\n" + "".join(f'        "{o}",\n' for o in outputs)
    if logs:
        text += "    log:\n" + "".join(f'        "{lg}",\n' for lg in logs)
    if files["benchmark"]:
        text += f'    benchmark:\n        "benchmarks/step{k}/{{shard}}.tsv"\n'
    touch = "touch {output} {log}" if logs else "touch {output}"
    return text + f'    shell:\n        "{touch}"\n'


def declared_files(snakefile: Path, workdir: Path, shards: int) -> list[dict[str, int]]:
    """The files each per-shard rule of the real workflow declares, in chain order, from a
    forced dry-run of a small working directory that prints every job."""
    result = run_timed(snakemake(snakefile, workdir, "-n", "--forceall", "--cores", "1"))
    if result["rc"] != 0:
        raise SystemExit(f"dry-run failed in {workdir}:\n{result['out'][-4000:]}")
    jobs: list[dict] = []
    for line in result["out"].splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            jobs.append({"rule": line[5:-1], "input": [], "output": [], "log": [], "benchmark": []})
        elif jobs and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            if key in ("input", "output", "log", "benchmark"):
                jobs[-1][key] = value.split(", ")
    per_rule: dict[str, list[dict]] = {}
    for job in jobs:
        per_rule.setdefault(job["rule"], []).append(job)
    chain_rules = {r for r, js in per_rule.items() if len(js) == shards}
    producer = {path: job["rule"] for job in jobs for path in job["output"]}
    upstream = {
        rule: {producer.get(p) for j in per_rule[rule] for p in j["input"]} & chain_rules
        for rule in chain_rules
    }
    order: list[str] = []
    while len(order) < len(chain_rules):  # topological order of the per-shard rules
        ready = sorted(r for r in chain_rules - set(order) if upstream[r] <= set(order))
        if not ready:
            raise SystemExit(f"per-shard rules are not a chain: {upstream}")
        order.append(ready[0])
    return [
        {key: max(len(j[key]) for j in per_rule[rule]) for key in ("output", "log", "benchmark")}
        | {"rule": rule}
        for rule in order
    ]


def chain_snakefile(workdir: Path, shards: int, steps: int) -> Path:
    """A chain of trivial jobs for the execution benchmark: `steps` per shard."""
    workdir.mkdir(parents=True)
    rules = [
        f'rule s{k}:\n    input:\n        "s{k - 1}/{{i}}.txt",\n    output:\n'
        f'        "s{k}/{{i}}.txt",\n    shell:\n        "touch {{output}}"\n'
        for k in range(1, steps + 1)
    ]
    text = (
        f"rule all:\n    input:\n        expand('s{steps}/{{i}}.txt', i=range({shards})),\n\n\n"
        + "\n\n".join(rules)
    )
    (workdir / "Snakefile").write_text(text)
    (workdir / "s0").mkdir()
    for i in range(shards):
        (workdir / "s0" / f"{i}.txt").touch()
    return workdir / "Snakefile"


# --- simulated run (self-invoked: `dag.py _simulate <snakemake args>`) -------------------


def write_removal_files(plan_file: str) -> None:
    """What the real minhash_cluster job writes beside its declared outputs: every shard's
    .remove and .previous (the filter jobs' inputs), empty here, written once."""
    from cosmopedia import layout

    root = layout.plan_root(plan_file)
    for entry in json.loads(Path(plan_file).read_text())["shards"]:
        for stage in ("remove", "remove_previous"):
            path = Path(layout.shard_path(root, stage, entry["source"], entry["shard"]))
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()


def simulate(argv: list[str]) -> None:
    """Run Snakemake with every rule's shell command replaced by creating its outputs.

    The rules are untouched, so the metadata Snakemake records (code, params, input) is
    that of a real run. Each command is formatted as Snakemake would run it and its
    length recorded per rule in $BENCH_COMMANDS (JSON) for part 2.
    """
    import atexit
    import importlib
    import inspect
    import threading

    from snakemake.io import is_flagged
    from snakemake.utils import format as format_command

    shell_module = importlib.import_module("snakemake.shell")
    original_new = shell_module.shell.__new__
    longest: dict[str, str] = {}
    lock = threading.Lock()

    def fake_new(cls, cmd, *args, iterable=False, read=False, bench_record=None, **kwargs):
        frame = inspect.currentframe().f_back
        context = frame.f_locals
        if not context.get(shell_module.RULEFUNC_CONTEXT_MARKER):
            return original_new(
                cls, cmd, *args, iterable=iterable, read=read, bench_record=bench_record, **kwargs
            )
        text = format_command(cmd, *args, stepout=2, **kwargs)
        rule = frame.f_globals["workflow"].get_rule(context["rule"])
        for path, declared in zip(context["output"], rule.output, strict=True):
            if is_flagged(declared, "directory"):
                os.makedirs(path, exist_ok=True)
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).touch()
        if rule.name == "minhash_cluster":  # it also writes each shard's removal files
            write_removal_files(context["input"].plan)
        for path in context["log"]:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch()
        if bench_record is not None:  # a benchmark line like a job faster than sampling
            bench_record.running_time = 0.0
            bench_record.process_gone = True
        with lock:
            if len(text) > len(longest.get(rule.name, "")):
                longest[rule.name] = text
        return None

    shell_module.shell.__new__ = staticmethod(fake_new)
    if os.environ.get("BENCH_COMMANDS"):
        atexit.register(lambda: Path(os.environ["BENCH_COMMANDS"]).write_text(json.dumps(longest)))
    from snakemake.cli import main

    sys.argv = ["snakemake", *argv]
    main()


def simulate_run(snakefile: Path, workdir: Path, commands: Path | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_simulate"]
    cmd += snakemake(snakefile, workdir, "--cores", "2", "--quiet", "all", *FAST)[1:]
    if commands is not None:
        os.environ["BENCH_COMMANDS"] = str(commands)
    try:
        result = run_timed(cmd)
    finally:
        os.environ.pop("BENCH_COMMANDS", None)
    if result["rc"] != 0:
        raise SystemExit(f"simulated run failed in {workdir}:\n{result['out'][-4000:]}")
    return result


# --- the parts ---------------------------------------------------------------------------


def dry_run(snakefile: Path, workdir: Path, *extra: str) -> dict:
    cmd = snakemake(snakefile, workdir, "-n", "--quiet", "rules", "--cores", "2", *extra)
    result = run_timed(cmd)
    if result["rc"] != 0:
        raise SystemExit(f"dry-run failed in {workdir}:\n{result['out'][-4000:]}")
    stats = job_stats(result["out"])
    result["jobs"] = stats.get("total", 0)
    result["nothing_to_do"] = "Nothing to be done" in result["out"]
    return result


def compare(workflows: dict[str, tuple[Path, Path]], repeats: int, label: str) -> dict:
    """Dry-runs of each workflow in turn (the order rotates per repeat), the best of
    `repeats` each; ratios of "real" against every other. Every dry-run must find the
    state it measures: jobs to run with outputs absent, nothing to do with them present."""
    names = list(workflows)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            r = dry_run(*workflows[name])
            if r["nothing_to_do"] != (label == "present"):
                raise SystemExit(f"{label}: {name} in {workflows[name][1]} is not in that state")
            runs[name].append(r)
            log(f"  {label} {name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, {r['jobs']} jobs")
    best = {name: min(rs, key=lambda r: r["wall"]) for name, rs in runs.items()}
    out = {
        name: {k: round(best[name][k], 2) for k in ("wall", "cpu")}
        | {"jobs": best[name]["jobs"], "nothing_to_do": best[name]["nothing_to_do"]}
        for name in best
    }
    for name in names[1:]:
        suffix = "" if name == "bare" else f"_vs_{name}"
        out[f"ratio_wall{suffix}"] = round(best["real"]["wall"] / best[name]["wall"], 2)
        out[f"ratio_cpu{suffix}"] = round(best["real"]["cpu"] / max(best[name]["cpu"], 1e-9), 2)
    return out


def command_lines(commands: dict[str, str]) -> dict:
    """Longest command per rule vs the limits; the largest one is exec'd to prove it runs."""
    arg_max = os.sysconf("SC_ARG_MAX")
    env_bytes = sum(len(k) + len(v) + 2 for k, v in os.environ.items())
    report = {"ARG_MAX": arg_max, "MAX_ARG_STRLEN": MAX_ARG_STRLEN, "rules": {}}
    for rule, text in sorted(commands.items()):
        argv = [a for a in shlex.split(text) if not re.fullmatch(r"\d?>+", a)]
        report["rules"][rule] = {
            "command_bytes": len(text.encode()),
            "argv": len(argv),
            "longest_arg_bytes": max(len(a.encode()) for a in argv),
            "argv_bytes": sum(len(a.encode()) + 1 for a in argv),
            "bash_c_possible": len(text.encode()) < MAX_ARG_STRLEN,
            "snakemake_uses_script": len(text) > SNAKEMAKE_SCRIPT_ABOVE,
        }
    if commands:
        rule = max(commands, key=lambda r: len(commands[r]))
        argv = [a for a in shlex.split(commands[rule]) if not re.fullmatch(r"\d?>+", a)]
        outcome = {}
        for how, cmd in (
            ("as_argv", ["/bin/true", *argv[1:]]),  # what the shell does with the command
            ("bash_c", ["bash", "-c", shlex.join(["true", *argv[1:]])]),  # one argument
        ):
            try:
                subprocess.run(cmd, check=True)
                outcome[how] = "ok"
            except OSError as exc:
                outcome[how] = f"failed: {exc.strerror}"
        report["longest"] = {"rule": rule, "exec_as_argv": outcome["as_argv"]}
        report["longest"]["exec_bash_c"] = outcome["bash_c"]
        report["env_bytes"] = env_bytes
    return report


def count_outputs(workdir: Path, steps: int) -> int:
    return sum(
        sum(1 for _ in os.scandir(workdir / f"s{k}"))
        for k in range(1, steps + 1)
        if (workdir / f"s{k}").is_dir()
    )


def execution(shards: int, steps: int, seconds: float, base: Path) -> dict:
    """Jobs finished per second, from the first finished job until `seconds` later (or the
    end): planning time is left out, the run is then killed."""
    results = {}
    for name, options in SCHEDULERS.items():
        workdir = base / re.sub(r"\W+", "_", name)
        snakefile = chain_snakefile(workdir, shards, steps)
        cmd = snakemake(snakefile, workdir, "--cores", "2", "--quiet", "all", *options)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
            start_new_session=True,
        )  # fmt: skip
        start = time.perf_counter()
        first = first_count = None
        while True:
            time.sleep(0.2)
            now, done = time.perf_counter(), count_outputs(workdir, steps)
            if first is None and done:
                first, first_count = now, done
            finished = proc.poll() is not None
            if finished or (first is not None and now - first >= seconds) or now - start > 600:
                break
        cut = not finished
        if cut:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            done = count_outputs(workdir, steps)
        span = (now - first) if first is not None else 0.0
        results[name] = {
            "options": " ".join(options) or "(none)",
            "jobs_done": done,
            "jobs_total": shards * steps,
            "seconds_running": round(span, 1),
            "seconds_planning": round((first or now) - start, 1),
            "jobs_per_s": round((done - (first_count or 0)) / span, 1) if span else 0.0,
            "cut": cut,
        }
        log(f"  {name}: {results[name]['jobs_per_s']} jobs/s ({done}/{shards * steps} jobs)")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_simulate"]:
        simulate(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=3000, help="seed shards (default 3000)")
    parser.add_argument("--repeats", type=int, default=2, help="dry-runs per workflow and state")
    parser.add_argument("--skip-absent", action="store_true", help="only outputs present")
    parser.add_argument("--skip-present", action="store_true", help="only outputs absent")
    parser.add_argument("--skip-exec", action="store_true", help="skip the scheduler benchmark")
    parser.add_argument("--exec-shards", type=int, default=500, help="chain width (default 500)")
    parser.add_argument("--exec-steps", type=int, default=6, help="chain length (default 6)")
    parser.add_argument("--exec-seconds", type=float, default=30, help="measured per setting")
    parser.add_argument(
        "--snakefile", default=str(SNAKEFILE), help="workflow to measure (default: this repo's)"
    )
    parser.add_argument(
        "--workdir", help="keep the working directories here (reused if they exist)"
    )
    parser.add_argument(
        "--bucket-jobs", type=int, default=1, help="minhash.bucket_jobs of the real workflow"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    base = Path(args.workdir or tempfile.mkdtemp(prefix="cosmopedia-dag-"))
    results: dict = {"shards": args.shards, "bucket_jobs": args.bucket_jobs}
    try:
        real = (Path(args.snakefile).resolve(), base / "real")
        if (real[1] / SIMULATED).exists() and not args.skip_absent:
            shutil.rmtree(real[1])  # outputs of an earlier simulated run: start again
        if not real[1].exists():
            log(f"setting up {args.shards} empty seed shards in {real[1]}")
            make_real(real[1], args.shards, args.bucket_jobs)
        first = dry_run(*real, "--forceall")  # the DAG's shape; fills the seed-hash cache
        stats = job_stats(first["out"])
        total = stats.pop("total")
        steps = sum(1 for n in stats.values() if n == args.shards)
        buckets = sum(n for n in stats.values() if 1 < n < args.shards)
        singles = sum(1 for n in stats.values() if n == 1)
        if steps * args.shards + buckets + singles != total:
            raise SystemExit(f"unexpected DAG shape: {stats}")
        # The files every per-shard rule declares (outputs, logs, benchmark), from a small
        # copy: the second baseline declares as many, so that its ratio shows what the
        # workflow costs beyond Snakemake's per-file bookkeeping.
        probe, probe_shards = base / "probe", 16  # at least one shard per source
        if not probe.exists():
            make_real(probe, probe_shards, args.bucket_jobs)
        declared = declared_files(real[0], probe, probe_shards)
        if len(declared) != steps:
            raise SystemExit(f"found {len(declared)} per-shard rules, expected {steps}")
        baselines = {
            "bare": (base / "bare", [args.shards, steps, buckets, singles, None]),
            "bare_files": (base / "bare_files", [args.shards, steps, buckets, singles, declared]),
        }
        workflows = {"real": real}
        for name, (workdir, shape) in baselines.items():
            if workdir.exists() and (
                json.loads((workdir / "shape.json").read_text()) != shape
                or ((workdir / SIMULATED).exists() and not args.skip_absent)
            ):
                shutil.rmtree(workdir)  # the workflow changed, or outputs are there: start again
            if not workdir.exists():
                make_bare(workdir, *shape)
                (workdir / "shape.json").write_text(json.dumps(shape))
            workflows[name] = (workdir / "Snakefile", workdir)
            bare_total = job_stats(dry_run(*workflows[name], "--forceall")["out"]).get("total")
            if bare_total != total:
                raise SystemExit(f"{name} chain has {bare_total} jobs, not {total}")
        results["dag"] = {"jobs": total, "jobs_per_rule": stats, "declared_files": declared}
        log(f"real DAG: {total} jobs; first dry-run {first['wall']:.1f} s")
        log(f"files per job, in chain order: {declared}")

        if not args.skip_absent:
            results["absent"] = compare(workflows, args.repeats, "absent")

        if not args.skip_present:
            commands = base / "commands.json"
            results["simulated_run_seconds"] = {}
            for name, (snakefile, workdir) in workflows.items():
                log(f"simulated run of {name} (outputs, logs, benchmarks, metadata)")
                run = simulate_run(snakefile, workdir, commands if name == "real" else None)
                (workdir / SIMULATED).touch()
                results["simulated_run_seconds"][name] = round(run["wall"], 1)
                log(f"  {run['wall']:.0f} s")
            results["present"] = compare(workflows, args.repeats, "present")
            results["command_lines"] = command_lines(json.loads(commands.read_text()))

        if not args.skip_exec:
            log(f"execution: {args.exec_shards} x {args.exec_steps} trivial jobs per setting")
            shutil.rmtree(base / "exec", ignore_errors=True)
            results["execution"] = execution(
                args.exec_shards, args.exec_steps, args.exec_seconds, base / "exec"
            )
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)

    print_summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_summary(results: dict) -> None:
    print(
        f"\nDAG: {results['dag']['jobs']} jobs from {results['shards']} shards "
        f"(minhash.bucket_jobs {results.get('bucket_jobs', 1)})"
    )
    for state in ("absent", "present"):
        if state not in results:
            continue
        r = results[state]
        print(
            f"dry-run, outputs {state}: real {r['real']['wall']} s wall / {r['real']['cpu']} s CPU,"
            f" bare {r['bare']['wall']} s / {r['bare']['cpu']} s -> ratio {r['ratio_wall']} "
            f"(CPU {r['ratio_cpu']}); nothing to do: real {r['real']['nothing_to_do']}, "
            f"bare {r['bare']['nothing_to_do']}"
        )
        if "bare_files" in r:
            print(
                f"  vs a bare chain declaring the same files per job: {r['bare_files']['wall']} s "
                f"-> ratio {r['ratio_wall_vs_bare_files']} (CPU {r['ratio_cpu_vs_bare_files']})"
            )
    if "command_lines" in results:
        c = results["command_lines"]
        print(f"command lines (MAX_ARG_STRLEN {c['MAX_ARG_STRLEN']}, ARG_MAX {c['ARG_MAX']}):")
        for rule, r in c["rules"].items():
            if r["command_bytes"] > 4096:
                print(
                    f"  {rule}: {r['command_bytes']} bytes, {r['argv']} args, longest arg "
                    f"{r['longest_arg_bytes']}, argv {r['argv_bytes']} bytes; bash -c possible: "
                    f"{r['bash_c_possible']}; Snakemake runs it from a script: "
                    f"{r['snakemake_uses_script']}"
                )
        if "longest" in c:
            print(
                f"  exec of the longest ({c['longest']['rule']}) as argv: "
                f"{c['longest']['exec_as_argv']}; as one bash -c argument: "
                f"{c['longest']['exec_bash_c']}"
            )
    if "execution" in results:
        print("execution of trivial jobs, 2 cores:")
        for name, r in results["execution"].items():
            cut = " (cut)" if r["cut"] else ""
            print(
                f"  {name:24} {r['jobs_per_s']:7.1f} jobs/s  ({r['jobs_done']}/{r['jobs_total']} "
                f"jobs, {r['seconds_running']} s measured after {r['seconds_planning']} s "
                f"of planning{cut})"
            )


if __name__ == "__main__":
    sys.exit(main())
