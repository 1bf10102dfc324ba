"""bench/dag.py keeps working as the workflow changes: a small run of its DAG part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_dag_benchmark_mirrors_the_workflow(tmp_path):
    out = tmp_path / "dag.json"
    cmd = [sys.executable, str(REPO / "bench" / "dag.py"), "--shards", "24", "--repeats", "1"]
    cmd += ["--skip-present", "--skip-exec", "--workdir", str(tmp_path / "w"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    per_rule = result["dag"]["jobs_per_rule"]
    chain = [r for r, n in per_rule.items() if n == 24]
    assert result["dag"]["jobs"] == 24 * len(chain) + sum(n for n in per_rule.values() if n < 24)
    # The second baseline declares what each real per-shard rule declares, in chain order.
    declared = {d["rule"]: d for d in result["dag"]["declared_files"]}
    assert [d["rule"] for d in result["dag"]["declared_files"]][:3] == [
        "ingest", "prompts", "generate"
    ]  # fmt: skip
    assert sorted(declared) == sorted(chain)
    assert declared["clean"] | {"rule": None} == {
        "rule": None, "output": 1, "log": 1, "benchmark": 1
    }  # fmt: skip
    assert all(d["log"] >= 1 and d["benchmark"] == 1 for d in declared.values())
    absent = result["absent"]
    assert {"real", "bare", "bare_files"} <= set(absent)
    assert absent["real"]["jobs"] == absent["bare"]["jobs"] == absent["bare_files"]["jobs"]
    assert absent["real"]["jobs"] == result["dag"]["jobs"]
    assert absent["ratio_wall"] > 0 and absent["ratio_wall_vs_bare_files"] > 0
