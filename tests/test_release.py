"""The release of a dataset version: manifest, card, publish (offline) and verify."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from conftest import BIN, DEMO_ROOT, workflow_env

pytestmark = pytest.mark.e2e


def cosmopedia(*args, cwd):
    return subprocess.run(
        [str(BIN / "cosmopedia"), *args], cwd=cwd, env=workflow_env(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


def test_manifest_records_how_to_reproduce(demo_run):
    manifest = json.loads((demo_run / DEMO_ROOT / "dataset/manifest.json").read_text())
    assert len(manifest["root_sha256"]) == 64
    assert set(manifest["project"]) == {"git_commit", "git_dirty"}
    assert manifest["packages"]["datatrove"] and manifest["packages"]["snakemake"]
    assert manifest["config"]["decontamination"]["threshold"] == 0.5
    assert manifest["config"]["generation"]["sampling"]["max_new_tokens"] == 2500
    assert manifest["determinism"].startswith("exact")
    assert "sha256" in manifest["seed_scheme"]
    generation = manifest["generation"]["web/web-00000"]
    assert generation["engine"]["kind"] == "dummy" and generation["rows"] == 37
    assert "timings" not in generation and "host" not in generation
    for entry in manifest["files"]:
        assert {"path", "sha256", "bytes", "rows", "tokens", "config"} <= set(entry)


def test_card_loads_every_config_with_datasets(demo_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    release = demo_run / DEMO_ROOT / "dataset"
    card = (release / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["license"] == "apache-2.0"
    manifest = json.loads((release / "manifest.json").read_text())
    # The card is covered by root_sha256: it shows the data files' root instead.
    assert manifest["data_root_sha256"] in card and manifest["root_sha256"] not in card
    for config in metadata["configs"]:
        name = config["config_name"]
        ds = datasets.load_dataset(
            str(release), name, split="train", cache_dir=str(demo_run / "hf")
        )
        assert ds.num_rows == sum(f["rows"] for f in manifest["files"] if f["config"] == name)
        assert ds.column_names[:6] == [
            "prompt", "text", "text_token_length", "seed_data", "format", "audience"
        ]  # fmt: skip


def test_publish_dry_run_lists_the_release_offline(demo_run):
    release = demo_run / DEMO_ROOT / "dataset"
    proc = cosmopedia(
        "publish", "--release", str(release), "--repo-id", "org/demo", "--dry-run",
        "--receipt", str(demo_run / "receipt.json"), cwd=demo_run,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "would upload 10 files" in proc.stderr and "datasets/org/demo" in proc.stderr
    receipt = json.loads((demo_run / "receipt.json").read_text())
    paths = {f["path"] for f in receipt["files"]}
    assert {"README.md", "manifest.json", "removed_rows.parquet", "SHA256SUMS"} <= paths
    assert receipt["dry_run"] and receipt["commit"] is None


def damaged_copy(demo_run, tmp_path) -> Path:
    release = tmp_path / "release"
    shutil.copytree(demo_run / DEMO_ROOT / "dataset", release)
    victim = release / "data/stories/stories/stories-00001.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    return release


def test_publish_refuses_a_release_that_does_not_match_its_manifest(demo_run, tmp_path):
    release = damaged_copy(demo_run, tmp_path)
    proc = cosmopedia("publish", "--release", str(release), "--dry-run", cwd=demo_run)
    assert proc.returncode == 2
    assert "data/stories/stories/stories-00001.parquet: sha256 differs" in proc.stderr


def test_verify_names_a_flipped_byte(demo_run, tmp_path):
    release = damaged_copy(demo_run, tmp_path)
    proc = cosmopedia(
        "verify", "--manifest", str(release / "manifest.json"), "--integrity-only", cwd=demo_run
    )
    assert proc.returncode == 1
    assert "MISMATCH data/stories/stories/stories-00001.parquet: sha256 differs" in proc.stdout


def test_unchanged_rebuild_verifies_reusing_cached_generations(demo_run, tmp_path):
    manifest = demo_run / DEMO_ROOT / "dataset/manifest.json"
    workdir = tmp_path / "rebuild"
    proc = cosmopedia(
        "verify", "--manifest", str(manifest), "--workdir", str(workdir), cwd=demo_run
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout and "reusing cached generations of 6 of 6 shards" in proc.stderr
    assert not (workdir / DEMO_ROOT / "logs/generate").exists()  # no engine was started


def test_verify_names_a_changed_config_value(demo_run, tmp_path):
    config = yaml.safe_load((demo_run / "config/config.yaml").read_text())
    config["clean"]["min_tokens"] = 300
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    proc = cosmopedia(
        "verify", "--manifest", str(demo_run / DEMO_ROOT / "dataset/manifest.json"),
        "--configfile", str(changed), "--workdir", str(tmp_path / "rebuild"), cwd=demo_run,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "MISMATCH config clean.min_tokens: manifest 150, rebuild 300" in proc.stdout
    assert "step clean: rows" in proc.stdout and "sha256 differs" in proc.stdout


def test_cli_help_lists_publish_and_verify():
    proc = subprocess.run(
        [sys.executable, "-m", "cosmopedia.cli", "--help"], capture_output=True, text=True
    )
    assert "publish" in proc.stdout and "verify" in proc.stdout
