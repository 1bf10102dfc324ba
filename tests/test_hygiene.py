"""Operational hygiene: what a killed job leaves behind is gone after the next success.

Atomic writes and datatrove's scratch folders are hidden temporary files and folders
beside their output (.<name>.<random>.tmp, .<step>.<name>.<random>). A kill skips their
clean-up; the next successful run of the same step removes them, and only them.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import DEMO_ROOT, run_snakemake
from cosmopedia.io import atomic_dir, atomic_path, write_json
from cosmopedia.minhash import scratch_dir


def plant(path, folder=False):
    """A temporary file or folder as a killed write leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "part").write_text("half written")
    else:
        path.write_text("half written")
    return path


def test_atomic_path_removes_its_own_leftovers_only(tmp_path):
    mine = plant(tmp_path / ".out.json.k1ll3d_x.tmp")
    other = plant(tmp_path / ".other.json.k1ll3d_x.tmp")
    longer = plant(tmp_path / ".out.json.k1ll3d_x.tmp.keep")
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert not mine.exists()
    assert other.exists() and longer.exists()
    assert (tmp_path / "out.json").read_text() == "{}"


def test_leftovers_false_keeps_them(tmp_path):
    """For files several processes write at once (the seed fingerprint cache)."""
    theirs = plant(tmp_path / ".cache.json.abcdefgh.tmp")
    write_json({}, tmp_path / "cache.json", leftovers=False)
    assert theirs.exists()


def test_atomic_dir_removes_tmp_and_old_folders(tmp_path):
    tmp_left = plant(tmp_path / ".web-00000.abcd_123.tmp", folder=True)
    old_left = plant(tmp_path / ".web-00000.abcd_123.old", folder=True)
    other = plant(tmp_path / ".web-00001.abcd_123.tmp", folder=True)
    with atomic_dir(tmp_path / "web-00000") as out:
        (out / "x").write_text("x")
    assert not tmp_left.exists() and not old_left.exists()
    assert other.exists()


def test_scratch_dir_removes_only_its_outputs_scratch(tmp_path):
    """Shards of one source share the parent folder: another shard's scratch stays."""
    mine = plant(tmp_path / ".minhash-signature.web-00000.zz9_zz9z", folder=True)
    running = plant(tmp_path / ".minhash-signature.web-00001.zz9_zz9z", folder=True)
    with scratch_dir(tmp_path / "web-00000", "minhash-signature") as work:
        assert work.name.startswith(".minhash-signature.web-00000.")
        assert work.parent == tmp_path
    assert not mine.exists() and not work.exists()
    assert running.exists()


@pytest.mark.e2e
def test_rerun_of_a_step_removes_what_a_kill_left(demo_run, tmp_path):
    """Leave what killed jobs leave, rerun those steps with Snakemake: all of it is gone."""
    workdir = tmp_path / "run"
    shutil.copytree(demo_run, workdir, symlinks=True)
    root = workdir / DEMO_ROOT
    left = [
        plant(root / "minhash/signatures/web/.minhash-signature.web-00000.k1ll3d00", folder=True),
        plant(root / "minhash/signatures/web/.web-00000.k1ll3d00.tmp", folder=True),
        plant(root / "seeds/web/.web-00000.parquet.k1ll3d00.tmp"),
        plant(root / "generations/web/.web-00000.checkpoint.jsonl.k1ll3d00.tmp"),
        plant(root / ".dataset.k1ll3d00.tmp", folder=True),
        plant(root / ".dataset.k1ll3d00.old", folder=True),
        plant(root / "dataset/.manifest.json.k1ll3d00.tmp"),
        plant(root / "dataset/data/.stale.parquet"),
    ]
    kept = plant(root / "minhash/signatures/web/.minhash-signature.web-00001.stillrun", folder=True)
    # The dataset step alone (its inputs are unchanged)...
    manifest = str(DEMO_ROOT / "dataset/manifest.json")
    run_snakemake(workdir, "--cores", "2", "--forcerun", "dataset", "--", manifest)
    # ... then one shard's chain from ingest to its MinHash signatures.
    signatures = str(DEMO_ROOT / "minhash/signatures/web/web-00000")
    run_snakemake(workdir, "--cores", "2", "--forcerun", "ingest", "--", signatures)
    assert [p for p in left if p.exists()] == []
    assert kept.exists()  # another shard's scratch (its job might be running)
