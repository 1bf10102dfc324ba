"""Counts add up: every row read from a seed file is released or listed as removed.

A real run with bad seed rows (quarantined) and injected engine faults (failed rows): at
every stage of every shard the rows reaching it are the rows it keeps plus the rows it
removed, as the manifest, removed_rows.parquet, the summary and the card report them.
"""

from __future__ import annotations

import json
import subprocess

import polars as pl
import pytest
import yaml

from conftest import BIN, make_workdir, run_snakemake, workflow_env
from cosmopedia.release import STAGE_FLOW

pytestmark = pytest.mark.e2e

ROOT = "results/counts/v1"
BAD_LINES = [
    b'{"text": "A short note on tide pools and the animals that live in them."}',
    b'{"text": "broken',
    b'{"text": ""}',
    b"\xff\xfe not utf-8",
    b'{"text": "How a bicycle derailleur moves the chain from one sprocket to the next."}',
]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("counts") / "w")
    (workdir / "resources/demo/seeds/web/web-bad.jsonl").write_bytes(b"\n".join(BAD_LINES) + b"\n")
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["dataset"] = {"name": "counts", "version": "v1"}
    config["sources"]["web"]["on_bad_rows"] = "quarantine"
    config["generation"] |= {
        "max_retries": 0,
        "backoff_base_s": 0,
        "dummy": {"faults": {"seed": 1, "rate_503": 0.15}},
    }
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--cores", "2")
    return workdir


def test_rows_read_are_released_or_removed_at_every_stage(faulty_run):
    release = faulty_run / ROOT / "dataset"
    manifest = json.loads((release / "manifest.json").read_text())
    removed = pl.read_parquet(release / "removed_rows.parquet")
    by_step = removed.group_by("stage", "reason").len()
    assert (
        dict(by_step.select(pl.format("{}/{}", "stage", "reason"), "len").rows())
        == (manifest["removed"])
    )
    # The planted problems are there, with what was wrong.
    quarantined = removed.filter(stage="ingest")
    assert quarantined["reason"].unique().to_list() == ["quarantined"]
    assert quarantined.height == 3 and set(quarantined["shard"]) == {"web-bad"}
    assert any("malformed JSON" in d for d in quarantined["detail"])
    assert any("empty text" in d for d in quarantined["detail"])
    failed = removed.filter(pl.col("stage") == "clean", pl.col("reason").str.starts_with("failed"))
    assert failed.height and all(failed["detail"])  # the engine's error

    released = sum(f["rows"] for f in manifest["files"])
    totals = manifest["stage_rows"]["total"]
    assert totals["read"] == released + removed.height
    assert totals["decontam"] == released == manifest["totals"]["rows"]

    # Per shard and stage: in = kept + removed there.
    gone = {
        (f"{source}/{shard}", stage): n
        for source, shard, stage, n in removed.group_by("source", "shard", "stage").len().rows()
    }
    for key, counts in manifest["stage_rows"]["by_shard"].items():
        for stage, after, step in STAGE_FLOW:
            assert counts[stage] == counts[after] + gone.get((key, step), 0), (key, stage)
    assert manifest["stage_rows"]["by_shard"]["web/web-bad"]["read"] == len(BAD_LINES)


def test_summary_and_card_start_counting_at_the_rows_read(faulty_run):
    root = faulty_run / ROOT
    manifest = json.loads((root / "dataset/manifest.json").read_text())
    read = manifest["stage_rows"]["total"]["read"]
    summary = (root / "summary.txt").read_text()
    assert f"rows per stage: read {read}, seeds {read - 3}," in summary
    assert "ingest/quarantined 3" in summary
    card = (root / "dataset/README.md").read_text()
    assert f"Rows per step: read {read}, seeds {read - 3}," in card
    assert "- ingest/quarantined: 3" in card


def test_the_release_verifies_with_its_removed_rows(faulty_run):
    proc = subprocess.run(
        [str(BIN / "cosmopedia"), "verify", "--integrity-only", "--manifest",
         str(faulty_run / ROOT / "dataset/manifest.json")],
        capture_output=True, text=True, env=workflow_env(), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "row counts" in proc.stdout
