"""The sidecar: a real engine process started, probed and always stopped with its group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cosmopedia.generation.probes import http_json
from cosmopedia.generation.sidecar import (
    Sidecar,
    SidecarError,
    fill_placeholders,
    running,
)

DUMMY = [sys.executable, "-m", "cosmopedia.cli", "serve-dummy", "--host", "{host}", "--port"]
DUMMY_COMMAND = [*DUMMY, "{port}"]


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_starts_probes_and_stops_the_engine(tmp_path):
    log_path = tmp_path / "logs" / "engine.log"
    with Sidecar(DUMMY_COMMAND, log_path, startup_timeout_s=30) as sidecar:
        pgid = sidecar.process.pid
        assert os.getpgid(pgid) == pgid  # its own process group
        assert sidecar.alive()
        assert http_json(f"{sidecar.url}/health")[0] == 200
        assert sidecar.info["engine"] == "dummy"
        assert sidecar.command[-1] == str(sidecar.port)
        assert 0 < sidecar.startup_s < 30
    assert not group_exists(pgid)
    assert sidecar.process.returncode == 0  # stopped by SIGTERM, cleanly
    log_text = log_path.read_text()
    assert "dummy engine serving" in log_text and "stopped" in log_text


def test_exception_in_block_still_stops_the_whole_group(tmp_path):
    # A child of the server that ignores SIGTERM: only the SIGKILL after the grace period
    # stops it, and only because the whole group is signalled.
    command = [
        "sh",
        "-c",
        "(trap '' TERM; exec sleep 60) & exec " + " ".join(DUMMY) + " {port}",
    ]
    log_path = tmp_path / "engine.log"
    with (
        pytest.raises(RuntimeError, match="boom"),
        Sidecar(command, log_path, startup_timeout_s=30, grace_s=0.5) as sidecar,
    ):
        pgid = sidecar.process.pid
        raise RuntimeError("boom")
    assert not group_exists(pgid)


def test_engine_that_exits_fails_fast_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('bad flag --frobnicate'); sys.exit(3)"]
    started = time.monotonic()
    with (
        pytest.raises(SidecarError) as info,
        Sidecar(command, tmp_path / "engine.log", startup_timeout_s=60),
    ):
        pass
    assert time.monotonic() - started < 10
    assert "exited with code 3" in str(info.value)
    assert "bad flag --frobnicate" in str(info.value)


def test_missing_program_is_a_sidecar_error(tmp_path):
    with pytest.raises(SidecarError, match="cannot start the engine"):
        Sidecar(["/nonexistent/text-generation-launcher"], tmp_path / "engine.log").__enter__()


def test_startup_deadline(tmp_path):
    started = time.monotonic()
    with (
        pytest.raises(SidecarError, match="not healthy within 1 s"),
        Sidecar(["sleep", "60"], tmp_path / "engine.log", startup_timeout_s=1),
    ):
        pass
    assert time.monotonic() - started < 5
    pid = int(re.search(r"pid (\d+)", (tmp_path / "engine.log").read_text()).group(1))
    assert not group_exists(pid)


def test_refuses_a_secret_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    with pytest.raises(SidecarError, match=r"\$HF_TOKEN"):
        Sidecar(["serve", "--token", "hf_secretvalue123"], tmp_path / "engine.log")
    assert not (tmp_path / "engine.log").exists()


def test_sigterm_to_the_job_stops_the_engine(tmp_path):
    log_path = tmp_path / "engine.log"
    script = textwrap.dedent(
        f"""
        import sys, time
        from cosmopedia.generation.sidecar import Sidecar
        with Sidecar({DUMMY_COMMAND!r}, {str(log_path)!r}, startup_timeout_s=30):
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    job = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "ready"
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        job.kill()
        job.wait()
    pid = int(re.search(r"pid (\d+)", log_path.read_text()).group(1))
    assert not group_exists(pid)
    assert "stopped" in log_path.read_text()


def test_fatal_log_line_aborts_start_up_at_once(tmp_path):
    # The engine stays alive but logs what a real one logs before it never becomes healthy.
    command = [*DUMMY_COMMAND, "--startup-fatal", "FATAL: CUDA out of memory"]
    started = time.monotonic()
    with (
        pytest.raises(SidecarError, match="fatal start-up error: 'FATAL: CUDA out of memory'"),
        Sidecar(command, tmp_path / "engine.log", startup_timeout_s=60, fatal_patterns=["^FATAL"]),
    ):
        pass
    assert time.monotonic() - started < 10
    pid = int(re.search(r"pid (\d+)", (tmp_path / "engine.log").read_text()).group(1))
    assert not group_exists(pid)


def test_several_engines_start_in_parallel_and_stop_together(tmp_path):
    log_path = tmp_path / "engine.log"
    sidecars = [
        Sidecar(DUMMY_COMMAND, log_path, prefix=f"[{i}] ", env={"COSMOPEDIA_TEST": str(i)})
        for i in range(3)
    ]
    with running(sidecars, startup_timeout_s=30):
        pgids = [s.process.pid for s in sidecars]
        assert len({s.port for s in sidecars}) == 3
        assert all(http_json(f"{s.url}/health")[0] == 200 for s in sidecars)
    assert not any(group_exists(pgid) for pgid in pgids)
    lines = log_path.read_text().splitlines()
    for i in range(3):  # each engine's lines carry its tag
        assert any(line.startswith(f"[{i}] ") and "dummy engine serving" in line for line in lines)


def test_one_broken_instance_stops_all(tmp_path):
    broken = [sys.executable, "-c", "import sys; print('no GPU'); sys.exit(4)"]
    sidecars = [Sidecar(DUMMY_COMMAND, tmp_path / "a.log"), Sidecar(broken, tmp_path / "b.log")]
    with pytest.raises(SidecarError, match="exited with code 4"), running(sidecars, 30):
        pass
    assert not any(group_exists(s.process.pid) for s in sidecars)


def test_sigkill_of_the_job_still_stops_the_engine_group(tmp_path):
    """The guard notices its job died (parent-death signal) and stops the group itself."""
    log_path = tmp_path / "engine.log"
    # A child that ignores SIGTERM: only the guard's SIGKILL after the grace period ends it.
    command = ["sh", "-c", "(trap '' TERM; exec sleep 60) & exec " + " ".join(DUMMY) + " {port}"]
    script = textwrap.dedent(
        f"""
        import time
        from cosmopedia.generation.sidecar import Sidecar
        with Sidecar({command!r}, {str(log_path)!r}, startup_timeout_s=30, grace_s=0.5):
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    job = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "ready"
        pid = int(re.search(r"pid (\d+)", log_path.read_text()).group(1))
        job.kill()
        job.wait()
        deadline = time.monotonic() + 10
        while group_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_exists(pid)
    finally:
        job.kill()
        job.wait()


def test_placeholders_leave_other_braces_alone():
    values = {"port": 8080, "model": "org/model"}
    assert fill_placeholders("--port={port}", values) == "--port=8080"
    assert fill_placeholders('{"model": "{model}"}', values) == '{"model": "org/model"}'
    assert fill_placeholders("{unknown}", values) == "{unknown}"
