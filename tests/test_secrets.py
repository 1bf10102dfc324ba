"""The Hugging Face token stays in the environment: a real Snakemake run with a (fake)
HF_TOKEN writes it to no output, log, provenance, manifest or Snakemake metadata file."""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import DEMO_ROOT, make_workdir, run_snakemake

pytestmark = pytest.mark.e2e

FAKE_TOKEN = "hf_FakeTokenForTheSecretsTest0123456789"


def small_demo(workdir) -> None:
    """The demo reduced to one seed file and light MinHash settings (a quick run)."""
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    stories = config["sources"]["stories"]
    first = sorted((workdir / "resources").glob("demo/seeds/stories/*.jsonl"))[0]
    stories["files"] = str(first.relative_to(workdir))
    config["sources"] = {"stories": stories}
    config["minhash"] = {"tokenizer": "whitespace", "num_buckets": 1}
    config["generation"] = {**config["generation"], "instances": 2}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_no_token_in_any_file(tmp_path, monkeypatch):
    workdir = make_workdir(tmp_path / "work")
    small_demo(workdir)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE_TOKEN)
    # conftest passes os.environ to Snakemake. The manifest is the target: every step runs.
    run_snakemake(workdir, "--cores", "2", str(DEMO_ROOT / "dataset" / "manifest.json"))

    root = workdir / DEMO_ROOT
    assert (root / "dataset" / "manifest.json").exists()
    engine_logs = list((root / "logs" / "generate").glob("*/*.engine.log"))
    assert engine_logs and all("dummy engine serving" in p.read_text() for p in engine_logs)
    scanned = 0
    for dirpath, _, filenames in os.walk(workdir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                assert FAKE_TOKEN.encode() not in f.read(), path
            scanned += 1
    assert scanned > 20
