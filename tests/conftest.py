"""Shared fixtures: real Snakemake runs of the real workflow in temporary directories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
BIN = Path(sys.executable).parent
DEMO_ROOT = Path("results/cosmopedia-demo/v0.1")


def workflow_env() -> dict:
    """The environment of a workflow run: the venv's commands first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def make_workdir(path: Path) -> Path:
    """A working directory laid out like the repository: config/ and resources/ copied."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config", "resources"):
        shutil.copytree(REPO / name, path / name)
    return path


def snakemake_command(workdir: Path, *args: str, timeout: int = 600) -> list[str]:
    """The command running the real workflow in `workdir`, killed after `timeout` seconds."""
    return [
        "timeout", "-s", "KILL", str(timeout),
        str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir),
        *args,
    ]  # fmt: skip


def run_snakemake(workdir: Path, *args: str, timeout: int = 600, check: bool = True):
    """Run the real workflow in `workdir`, killed (not hung) after `timeout` seconds."""
    cmd = snakemake_command(workdir, *args, timeout=timeout)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=workflow_env())
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(args)}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Jobs a dry-run plans, by rule (Snakemake's `--quiet rules` table; {} when nothing is
    to be done)."""
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", *args)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One full run of the demo workflow, shared by the end-to-end tests."""
    workdir = make_workdir(tmp_path_factory.mktemp("demo") / "work")
    run_snakemake(workdir, "--cores", "2")
    return workdir


# Settings of single steps, for tests that call a step's functions or CLI directly: the
# keys a test does not care about get the values the demo config would give them.
INGEST_DEFAULTS = {"columns": {}, "id_column": None, "on_bad_rows": "fail", "max_chars": 1_000_000}
PROMPTS_DEFAULTS = {
    "seed": 0,
    "styles": None,
    "audiences": None,
    "fan_out": "one",
    "seed_data": "seeds",
    "extract_max_chars": 1000,
    "topic_probability": 0.5,
    "template_set": "project",
    "templates": "resources/prompts/templates.yaml",
    "variant": None,
    "templates_sha256": "",
}


def ingest_settings(given: dict):
    from cosmopedia import settings

    return settings.from_dict(settings.Ingest, INGEST_DEFAULTS | given)


def prompts_settings(given: dict):
    from cosmopedia import settings

    return settings.from_dict(settings.Prompts, PROMPTS_DEFAULTS | given)
