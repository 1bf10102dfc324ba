"""The Slurm profiles stay in step: the test cluster's profile mirrors the H100 one.

profiles/slurm_test is what tests/test_slurm.py runs on the local cluster; it only proves
something about profiles/slurm_h100 if both give the same rules the same kinds of
resources. Fast: no Slurm needed (dry runs use no executor).

Profiles are resolved per checkout: `make demo` and `make test` name them by path and
leave ~/.config/snakemake alone; `make profiles` (the opt-in for the bare `--profile
NAME` form) never re-points a link to another checkout's profile unless forced.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_workdir, run_snakemake
from cosmopedia import settings
from cosmopedia.generation import engines

PROFILES = {name: REPO / "profiles" / name for name in ("slurm_h100", "slurm_test")}
GPU_KEYS = {"gpu", "gpu_model", "gres", "cpus_per_gpu", "gpus"}
STRING_KEYS = {"slurm_partition", "slurm_account", "gpu_model", "slurm_extra", "constraint"}
# Keys only the test profile sets: the demo's dummy engine needs no GPU (the rule asks for
# 0), so slurm_test asks for one; slurm_h100 leaves the count to the rule (from config).
TEST_ONLY_KEYS = {"generate": {"gpu"}}


def load(name: str) -> dict:
    with open(PROFILES[name] / "config.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def evaluate(value):
    """A resource value as Snakemake sees it: strings are Python expressions."""
    if not isinstance(value, str):
        return value
    try:
        return eval(value, {"__builtins__": {}}, {"attempt": 1, "threads": 1})  # noqa: S307
    except NameError as exc:
        raise AssertionError(
            f"resource value {value!r} is evaluated as Python ({exc}): quote names, \"'gpu'\""
        ) from None


def gpu_rules(profile: dict) -> set[str]:
    return {rule for rule, res in profile["set-resources"].items() if GPU_KEYS & set(res)}


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict]:
    return {name: load(name) for name in PROFILES}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("profiles") / "work")


def test_both_use_the_slurm_executor_with_retries(profiles):
    for name, profile in profiles.items():
        assert profile["executor"] == "slurm", name
        # a cancelled or preempted generate job must be resubmitted (and resume)
        assert profile["retries"] >= 1, name
        assert profile["rerun-incomplete"] is True, name
        assert profile["jobs"] >= 2, name
        # plugin 2.8.0 never sees sacct's "CANCELLED by <uid>": a cancelled job would hang
        assert profile["slurm-status-command"] == "squeue", name


def test_same_rules_and_resource_keys(profiles):
    h100, test = profiles["slurm_h100"], profiles["slurm_test"]
    assert set(h100["default-resources"]) == set(test["default-resources"])
    assert set(h100["set-resources"]) == set(test["set-resources"])
    for rule, resources in h100["set-resources"].items():
        test_keys = set(test["set-resources"][rule]) - TEST_ONLY_KEYS.get(rule, set())
        assert set(resources) == test_keys, rule


def test_resource_values_evaluate(profiles):
    for name, profile in profiles.items():
        blocks = {"default-resources": profile["default-resources"], **profile["set-resources"]}
        for where, resources in blocks.items():
            for key, value in resources.items():
                result = evaluate(value)
                if key in STRING_KEYS:
                    assert isinstance(result, str) and result, f"{name} {where}.{key}"
                else:
                    assert isinstance(result, int) and result > 0, f"{name} {where}.{key}"


def test_generate_alone_gets_h100s_on_another_partition(profiles):
    for name, profile in profiles.items():
        assert gpu_rules(profile) == {"generate"}, name
        generate = profile["set-resources"]["generate"]
        assert evaluate(generate["gpu_model"]) == "h100", name
        cpu_partition = evaluate(profile["default-resources"]["slurm_partition"])
        assert evaluate(generate["slurm_partition"]) != cpu_partition, name
        assert not GPU_KEYS & set(profile["default-resources"]), name
    # The rule asks for instances x gpus_per_instance GPUs: a count here would override it.
    assert "gpu" not in profiles["slurm_h100"]["set-resources"]["generate"]
    assert evaluate(profiles["slurm_test"]["set-resources"]["generate"]["gpu"]) >= 1


def engine_gpus(configfile: Path) -> int:
    """GPUs a generate job of this config needs (the rule's own count: its engine's)."""
    with open(configfile, encoding="utf-8") as f:
        generation = yaml.safe_load(f).get("generation", {})
    section = settings.from_dict(settings.Generation, generation, "generation")
    return engines.gpus(settings.Generate("test/v0", section))


def test_set_resources_name_real_rules(profiles, workdir):
    listed = run_snakemake(workdir, "--list-rules", timeout=120).stdout.split()
    assert "generate" in listed
    for name, profile in profiles.items():
        unknown = set(profile["set-resources"]) - set(listed)
        assert not unknown, f"{name}: set-resources for rules the workflow lacks: {unknown}"


def planned_resources(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job in a dry run's output."""
    jobs, rule = [], None
    for line in stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+resources: (.*)$", line)):
            pairs = (item.split("=", 1) for item in m.group(1).split(", "))
            jobs.append((rule, dict(pairs)))
            rule = None
    return jobs


@pytest.mark.parametrize(
    ("name", "configfile"), [("slurm_h100", "cosmopedia.yaml"), ("slurm_test", "config.yaml")]
)
def test_dry_run_places_every_job(name, configfile, profiles, workdir):
    """Snakemake itself resolves profile + config: generate on H100s, the rest on CPU.

    slurm_h100 with the full reproduction config (a TGI engine on 2 GPUs per job),
    slurm_test with the demo, as the Slurm tests run it.
    """
    config = workdir / "config" / configfile
    args = ["--profile", str(PROFILES[name]), "--configfile", str(config), "-n"]
    jobs = planned_resources(run_snakemake(workdir, *args, timeout=120).stdout)
    assert {rule for rule, _ in jobs} >= {"generate", "ingest", "clean", "dataset"}
    profile = profiles[name]
    gpus = evaluate(profile["set-resources"]["generate"].get("gpu", engine_gpus(config)))
    assert gpus >= 1, (name, configfile)
    gpu_partition = evaluate(profile["set-resources"]["generate"]["slurm_partition"])
    cpu_partition = evaluate(profile["default-resources"]["slurm_partition"])
    for rule, res in jobs:
        if rule == "generate":
            assert res["slurm_partition"] == gpu_partition, res
            assert res["gpu_model"] == "h100", res
            assert int(res["gpu"]) == gpus, res
        else:
            assert res["slurm_partition"] == cpu_partition, (rule, res)
            assert not GPU_KEYS & set(res), (rule, res)


# --- profiles per checkout -----------------------------------------------------------------


def make(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home))
    env.pop("MAKEFLAGS", None)  # under `make test`: no flags of the outer make
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def links(home: Path) -> dict[str, str]:
    folder = home / ".config" / "snakemake"
    return {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()}


def test_demo_and_test_leave_the_users_profiles_alone(tmp_path):
    for target in ("demo", "test"):
        proc = make(tmp_path, "-n", target)
        assert proc.returncode == 0, proc.stderr
        assert ".config/snakemake" not in proc.stdout, proc.stdout
    assert "snakemake --profile profiles/local" in make(tmp_path, "-n", "demo").stdout
    assert not (tmp_path / ".config").exists()


def test_make_profiles_links_this_checkouts_profiles(tmp_path):
    proc = make(tmp_path, "profiles")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mine = {name: str(REPO / "profiles" / name) for name in ("local", *PROFILES)}
    assert links(tmp_path) == mine
    again = make(tmp_path, "profiles")
    assert again.returncode == 0 and again.stdout.count("(already)") == 3
    assert links(tmp_path) == mine


def test_make_profiles_never_repoints_another_checkouts_link(tmp_path):
    other = tmp_path / "other-checkout" / "profiles" / "slurm_h100"
    other.mkdir(parents=True)
    (tmp_path / ".config" / "snakemake").mkdir(parents=True)
    link = tmp_path / ".config" / "snakemake" / "slurm_h100"
    link.symlink_to(other)
    proc = make(tmp_path, "profiles")
    assert proc.returncode != 0
    assert f"not re-pointing {link}: it is {other}" in proc.stdout
    assert os.readlink(link) == str(other)
    assert links(tmp_path)["local"] == str(REPO / "profiles" / "local")  # the others linked

    forced = make(tmp_path, "profiles", "FORCE=1")
    assert forced.returncode == 0, forced.stdout
    assert os.readlink(link) == str(REPO / "profiles" / "slurm_h100")


def test_make_profiles_replaces_a_dangling_link_and_never_a_folder(tmp_path):
    folder = tmp_path / ".config" / "snakemake"
    (folder / "local").mkdir(parents=True)
    (folder / "slurm_test").symlink_to(tmp_path / "deleted-checkout" / "profiles" / "slurm_test")
    proc = make(tmp_path, "profiles")
    assert proc.returncode != 0 and f"not replacing {folder / 'local'}" in proc.stdout
    assert (folder / "local").is_dir() and not (folder / "local").is_symlink()
    assert os.readlink(folder / "slurm_test") == str(REPO / "profiles" / "slurm_test")
