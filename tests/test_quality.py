"""Quality gates, enforced by `make test` (what CI runs): ruff on the Python code,
snakefmt and `snakemake --lint` on the workflow. `make lint` runs the same tools."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import BIN, REPO, SNAKEFILE, make_workdir, workflow_env

PYTHON_PATHS = ["src", "tests", "bench"]
# Lints the project accepts on purpose, by title. Rules run from the project's venv
# (README "Set-up"), so none declares a conda env or container.
ACCEPTED_LINTS = {
    "Specify a conda environment or container for each rule.",
    # On purpose (workflow/rules/common.smk): generation's operational settings must not
    # be a param, or changing the concurrency would regenerate every shard.
    "Shell command directly uses variable GENERATE_SETTINGS from outside of the rule",
}


def run(*cmd: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env=workflow_env(), timeout=600
    )


@pytest.mark.parametrize(
    "args",
    [["check", *PYTHON_PATHS], ["format", "--check", *PYTHON_PATHS]],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff(args):
    proc = run(str(BIN / "ruff"), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt():
    proc = run(str(BIN / "snakefmt"), "--check", "workflow")
    if proc.returncode != 0:  # name the files (--check only counts them)
        diff = run(str(BIN / "snakefmt"), "--diff", "workflow").stdout
        files = re.findall(r"=====> Diff for (.+?) <=====", diff)
        pytest.fail(f"snakefmt would reformat {files} (run: snakefmt workflow)\n{proc.stderr}")


def parse_lints(text: str) -> list[tuple[str, str]]:
    """(where, title) of every lint in `snakemake --lint` text output."""
    lints, where = [], None
    for line in text.splitlines():
        if header := re.match(r"Lints for (.+):$", line):
            where = header.group(1)
        elif item := re.match(r"    \* (.+?):?$", line):
            lints.append((where, item.group(1)))
    return lints


def test_snakemake_lint(tmp_path):
    workdir = make_workdir(tmp_path / "w")  # the Snakefile plans from config/ and resources/
    proc = run(
        str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir), "--lint",
        cwd=workdir,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    lints = [(w, t) for w, t in parse_lints(output) if t not in ACCEPTED_LINTS]
    assert not lints, "snakemake --lint:\n" + "\n".join(f"{w}: {t}" for w, t in lints)
    assert proc.returncode == 0 or parse_lints(output), output[-3000:]
