"""bench/saturation.py keeps working: its metered dummy engine measures a busy batch, and a
small run of the benchmark compares both clients."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cosmopedia.generation.probes import http_json
from cosmopedia.generation.sidecar import Sidecar

BENCH = Path(__file__).resolve().parent.parent / "bench"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_the_meter_integrates_the_sequences_generating(tmp_path):
    # 3 admitted, 1 generating at a time for about 0.2 s each: the batch is busy throughout.
    command = [sys.executable, str(BENCH / "saturation_meter.py"), "--host", "{host}"]
    command += ["--port", "{port}", "--max-concurrent", "3", "--max-batch", "1"]
    command += ["--latency-per-token", "0.004"]
    with Sidecar(command, tmp_path / "engine.log", startup_timeout_s=30, smoke=None) as sidecar:
        body = {"inputs": "Tides rise and fall twice a day.", "parameters": {"max_new_tokens": 50}}
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda _: http_json(f"{sidecar.url}/generate", body), range(3)))
        meter = get(f"{sidecar.url}/saturation")
        stats = get(f"{sidecar.url}/stats")
    assert [status for status, _ in replies] == [200, 200, 200]
    assert stats["ok"] == 3 and meter["batch_capacity"] == 1
    period = meter["last_done_s"] - meter["first_request_s"]
    assert meter["busy_seq_s"] == pytest.approx(period, rel=0.01)
    assert 0.55 < period < 2.0
    assert meter["last_full_s"] is not None and meter["clock_s"] >= meter["last_done_s"]


def test_a_small_saturation_run(tmp_path):
    cmd = [sys.executable, str(BENCH / "saturation.py"), "--rows", "60", "--capacity", "2"]
    cmd += ["--latency", "0.0001", "--target", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ratio (this client / seed pattern):" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("this", "seed"))]
    saturations = [float(re.search(r"\s(\d\.\d{4})\s", line).group(1)) for line in lines]
    assert len(saturations) == 2 and all(0 < s <= 1 for s in saturations), proc.stdout
