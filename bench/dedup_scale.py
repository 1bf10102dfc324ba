"""MinHash dedup at scale on this machine: time and peak memory of each stage's jobs.

Short generated documents (50-150 words, ~600 bytes: sentences drawn from a pool of
pseudo-English, a few near-duplicates planted) in shards of --shard-docs documents. Each
stage runs as the workflow runs it: the real `cosmopedia minhash-*` commands, one process
per job, --jobs at a time:

    signature   one job per shard
    buckets     one job per bucket (minhash.bucket_jobs = num_buckets: the scale-out mode)
    cluster     one job
    filter      one job per shard

and each job's CPU time (user + system), wall time and peak RSS are recorded (a small
parent process reads them from getrusage). Per corpus size and stage it prints the jobs,
the CPU seconds in all and of the largest job, the largest peak RSS, the stage's wall
time on --jobs cores, and docs/s per CPU-second; then the per-bucket job, and a linear
fit of each stage against the number of documents, which docs/cluster.md extrapolates to
Cosmopedia's 30M documents.

    .venv/bin/python bench/dedup_scale.py                              # 50k and 200k
    .venv/bin/python bench/dedup_scale.py --docs 50000 200000 1000000  # + 1M (long)
    .venv/bin/python bench/dedup_scale.py --docs 20000 --shard-docs 5000   # a quick look

The machine is shared: CPU seconds are the measure, wall times vary with the load.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from cosmopedia import layout, minhash, settings
from cosmopedia.io import write_json, write_parquet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decontam import Generator  # noqa: E402  (the same pseudo-English as bench/decontam.py)

BIN = Path(sys.executable).parent
SOURCE = "web"
STAGES = ("signature", "buckets", "cluster", "filter")


# ---------------------------------------------------------------- data


def make_corpus(n_docs: int, seed: int = 11, dup_rate: float = 0.01):
    """(ids, texts, planted pairs): documents of 4-10 sentences from a pool of 200,000
    (numpy picks them: 1M documents in seconds), and `dup_rate` of them copied once with
    ~2% of their words replaced (near-duplicates that MinHash should find)."""
    gen = Generator(seed)
    pool = [gen.sentence(int(n)) for n in np.random.default_rng(seed).integers(8, 20, 200_000)]
    rng = np.random.default_rng(seed)
    n_orig = n_docs - int(n_docs * dup_rate)
    lengths = rng.integers(4, 11, n_orig)
    picks = rng.integers(0, len(pool), int(lengths.sum()))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    spans = zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    texts = [" ".join(pool[i] for i in picks[a:b]) for a, b in spans]
    pairs = []
    for original in rng.choice(n_orig, n_docs - n_orig, replace=False).tolist():
        words = texts[original].split(" ")
        for pos in rng.choice(len(words), max(1, len(words) // 50), replace=False).tolist():
            words[pos] = gen.word()
        pairs.append((original, len(texts)))
        texts.append(" ".join(words))
    order = rng.permutation(len(texts))  # copies spread over the shards
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    texts = [texts[i] for i in order.tolist()]
    pairs = [(int(where[a]), int(where[b])) for a, b in pairs]
    return texts, pairs


def write_corpus(texts: list[str], shard_docs: int, root: Path) -> list[str]:
    """Clean shards as the workflow lays them out; returns the shard keys."""
    keys = []
    for s, start in enumerate(range(0, len(texts), shard_docs)):
        name = f"{SOURCE}-{s:05d}"
        chunk = texts[start : start + shard_docs]
        ids = [f"{SOURCE}/{name}/{i:07d}" for i in range(len(chunk))]
        df = pl.DataFrame({"id": ids, "text": chunk}, schema={"id": pl.String, "text": pl.String})
        write_parquet(df, layout.shard_path(str(root), "clean", SOURCE, name))
        keys.append(f"{SOURCE}/{name}")
    shards = [{"source": SOURCE, "shard": key.split("/")[1]} for key in keys]
    write_json({"shards": shards}, layout.global_path(str(root), "plan"))
    return keys


# ---------------------------------------------------------------- jobs

# A small parent that reports its child's CPU time and peak RSS (measured from this big
# process, a forked child's peak RSS would start at ours).
_RUSAGE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(r.ru_utime + r.ru_stime, r.ru_maxrss, file=sys.stderr); sys.exit(code)"
)


@dataclass
class Job:
    name: str
    cpu: float
    rss_mb: float
    wall: float


def run_job(name: str, cmd: list[str], log: Path) -> Job:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", _RUSAGE, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    wall = time.perf_counter() - t0
    lines = log.read_text().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({' '.join(cmd)}):\n" + "\n".join(lines[-30:]))
    cpu, rss = lines[-1].split()
    return Job(name, float(cpu), int(rss) / 1024, wall)


def run_stage(jobs: dict[str, list[str]], parallel: int, logs: Path) -> tuple[list[Job], float]:
    """Every job of a stage, `parallel` at a time: (jobs, the stage's wall seconds)."""
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = [
            pool.submit(run_job, name, cmd, logs / f"{name.replace('/', '_')}.log")
            for name, cmd in jobs.items()
        ]
        done = [f.result() for f in futures]
    return done, time.perf_counter() - t0


def run_size(n_docs: int, args, work: Path) -> dict:
    root = work / "results"
    t0 = time.perf_counter()
    texts, pairs = make_corpus(n_docs)
    keys = write_corpus(texts, args.shard_docs, root)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    log(f"{n_docs:,} docs ({mb:.0f} MB of text, {len(keys)} shards) made in "
        f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    s = settings.canonical_json(minhash.result_settings(minhash.parse_settings({})))
    nb = minhash.parse_settings({}).num_buckets
    cosmopedia = str(BIN / "cosmopedia")
    plan, r = layout.global_path(str(root), "plan"), str(root)
    dups_dir = Path(layout.global_path(r, "buckets", bucket=0)).parent
    index_dir = Path(layout.global_path(r, "minhash_index", bucket=0)).parent
    remove_dir = layout.global_path(r, "remove_dir")

    def shard(stage: str, key: str) -> str:
        return layout.shard_path(r, stage, *key.split("/"))

    stages = {
        "signature": {
            key: [cosmopedia, "minhash-signature", "--input", shard("clean", key),
                  "--output-dir", shard("signatures", key), "--settings", s]
            for key in keys
        },
        "buckets": {
            f"bucket {b}": [cosmopedia, "minhash-buckets", "--plan", plan, "--root", r,
                            "--dups-dir", str(dups_dir), "--index-dir", str(index_dir),
                            "--buckets", str(b), "--settings", s]
            for b in range(nb)
        },
        "cluster": {
            "cluster": [cosmopedia, "minhash-cluster", "--plan", plan, "--root", r,
                        "--dups", *(str(dups_dir / f"{b}.dups") for b in range(nb)),
                        "--remove-dir", remove_dir,
                        "--clusters", layout.global_path(r, "clusters"),
                        "--report", layout.global_path(r, "cluster_report"), "--settings", s]
        },
        "filter": {
            key: [cosmopedia, "minhash-filter", "--input", shard("clean", key),
                  "--remove", shard("remove", key), "--stream", shard("signature_stream", key),
                  "--output", shard("dedup", key), "--removed", shard("dedup_removed", key),
                  "--settings", s]
            for key in keys
        },
    }  # fmt: skip
    out = {"docs": n_docs, "shards": len(keys), "text_mb": mb, "stages": {}}
    for stage in STAGES:
        jobs, wall = run_stage(stages[stage], args.jobs, work / "logs" / stage)
        out["stages"][stage] = {
            "jobs": len(jobs),
            "cpu": sum(j.cpu for j in jobs),
            "max_job_cpu": max(j.cpu for j in jobs),
            "max_rss_mb": max(j.rss_mb for j in jobs),
            "wall": wall,
            "per_job": [(j.name, round(j.cpu, 2), round(j.rss_mb)) for j in jobs],
        }
        log(f"  {stage}: {len(jobs)} jobs, {out['stages'][stage]['cpu']:.1f} s CPU, "
            f"{wall:.0f} s wall, max RSS {out['stages'][stage]['max_rss_mb']:.0f} MB")  # fmt: skip
    sig_mb = sum(f.stat().st_size for f in (root / "minhash" / "signatures").rglob("*.sig"))
    out["signature_mb_per_bucket"] = sig_mb / 1e6 / nb
    removed = set(
        pl.concat([pl.read_parquet(shard("dedup_removed", key), columns=["id"]) for key in keys])[
            "id"
        ]
    )
    ids = [f"{SOURCE}/{SOURCE}-{i // args.shard_docs:05d}/{i % args.shard_docs:07d}"
           for i in range(len(texts))]  # fmt: skip
    found = sum(ids[a] in removed or ids[b] in removed for a, b in pairs)
    out["planted_pairs"], out["planted_found"], out["removed"] = len(pairs), found, len(removed)
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- report


def print_tables(results: list[dict]) -> None:
    print("\n| docs | shards | stage | jobs | CPU s | largest job CPU s | largest peak RSS MB | "
          "stage wall s | docs/s per CPU-s |")  # fmt: skip
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for res in results:
        for stage in STAGES:
            st = res["stages"][stage]
            print(f"| {res['docs']:,} | {res['shards']} | {stage} | {st['jobs']} | "
                  f"{st['cpu']:.1f} | {st['max_job_cpu']:.1f} | {st['max_rss_mb']:.0f} | "
                  f"{st['wall']:.0f} | {res['docs'] / st['cpu']:,.0f} |")  # fmt: skip
        total = sum(res["stages"][s]["cpu"] for s in STAGES)
        print(f"| {res['docs']:,} | {res['shards']} | **all** | | {total:.1f} | | | "
              f"{sum(res['stages'][s]['wall'] for s in STAGES):.0f} | "
              f"{res['docs'] / total:,.0f} |")  # fmt: skip
    print("\n| docs | per-bucket job: CPU s (mean, max) | peak RSS MB (max) | signatures per "
          "bucket MB | removed | planted pairs found |\n|---:|---|---:|---:|---:|---|")  # fmt: skip
    for res in results:
        per = [cpu for _, cpu, _ in res["stages"]["buckets"]["per_job"]]
        print(f"| {res['docs']:,} | {np.mean(per):.2f}, {max(per):.2f} | "
              f"{res['stages']['buckets']['max_rss_mb']:.0f} | "
              f"{res['signature_mb_per_bucket']:.1f} | {res['removed']:,} | "
              f"{res['planted_found']}/{res['planted_pairs']} |")  # fmt: skip
    if len(results) >= 2:
        docs = np.array([r["docs"] for r in results], dtype=float)
        print("\nlinear fit per stage, CPU s = a + b x docs (b per million docs), and peak RSS "
              "of its largest job:")  # fmt: skip
        for stage in STAGES:
            cpu = np.array([r["stages"][stage]["cpu"] for r in results])
            b, a = np.polyfit(docs, cpu, 1)
            rss = [round(r["stages"][stage]["max_rss_mb"]) for r in results]
            print(f"  {stage:9} a = {a:7.1f} s, b = {b * 1e6:8.1f} s per 1M docs; peak RSS MB "
                  f"{rss}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--shard-docs", type=int, default=10_000, help="documents per shard")
    parser.add_argument("--jobs", type=int, default=2, help="jobs run at once")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--keep", help="keep the working folders under this folder")
    args = parser.parse_args()
    results = []
    for n_docs in args.docs:
        if args.keep:
            work = Path(args.keep) / f"docs-{n_docs}"
            work.mkdir(parents=True, exist_ok=False)
            results.append(run_size(n_docs, args, work))
        else:
            with tempfile.TemporaryDirectory(prefix="bench-dedup-scale-") as tmp:
                results.append(run_size(n_docs, args, Path(tmp)))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
