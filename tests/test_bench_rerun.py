"""bench/rerun.py keeps working: a small run of it, on the simulated workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_rerun_benchmark_runs_only_the_changed_removals(tmp_path):
    out = tmp_path / "rerun.json"
    cmd = [sys.executable, str(REPO / "bench" / "rerun.py"), "--shards", "16", "--cross", "1"]
    cmd += ["--workdir", str(tmp_path / "w"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    executed = result["executed"]
    for rule in ("ingest", "prompts", "generate", "clean", "minhash_signature"):
        assert executed[rule] == 1, executed
    expected = result["expected_filter_shards"]
    assert len(expected) == 2 and result["changed"] in expected
    assert result["executed_shards"]["minhash_filter"] == expected
    assert result["executed_shards"]["decontaminate"] == expected
    assert result["folders_rewritten"] == {"dedup": expected, "decontam": expected}
    # The dry-run plans before clustering: the changed shard's filter only.
    assert result["dry_run"]["minhash_filter"] == 1
