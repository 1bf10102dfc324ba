"""cosmopedia lock: Hub revisions and file lists pinned or checked, offline, against a
recorded Hub listing (tests/fixtures/hub_listing.json) behind a stand-in for HfApi."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cosmopedia import cli, lock, plan, settings

REPO = Path(__file__).resolve().parent.parent
LISTING = json.loads((REPO / "tests" / "fixtures" / "hub_listing.json").read_text())
COSMOPEDIA_SHA = "0ae6ec63f91742bd2d1eaef4f02232c55d719385"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


class RecordedHub:
    """The few HfApi calls `cosmopedia lock` makes, answered from a recorded listing."""

    def __init__(self, listing: dict):
        self.listing = listing
        self.calls: list[tuple] = []

    def _commit(self, kind: str, repo_id: str, revision: str) -> str:
        repo = self.listing[kind].get(repo_id)
        if repo is None:
            raise LookupError(f"{repo_id}: repository not found")
        commits = repo.get("commits") or list(repo.get("files", {}))
        sha = repo["refs"].get(revision, revision)
        if sha not in commits:
            raise LookupError(f"{repo_id}: revision {revision} not found")
        return sha

    def dataset_info(self, repo_id, revision=None):
        self.calls.append(("dataset_info", repo_id, revision))
        return SimpleNamespace(sha=self._commit("datasets", repo_id, revision))

    def model_info(self, repo_id, revision=None):
        self.calls.append(("model_info", repo_id, revision))
        return SimpleNamespace(sha=self._commit("models", repo_id, revision))

    def list_repo_files(self, repo_id, repo_type=None, revision=None):
        assert repo_type == "dataset"
        self.calls.append(("list_repo_files", repo_id, revision))
        return list(self.listing["datasets"][repo_id]["files"][revision])


@pytest.fixture
def hub(monkeypatch):
    recorded = RecordedHub(copy.deepcopy(LISTING))
    monkeypatch.setattr(lock, "hub_api", lambda: recorded)
    return recorded


def test_the_shipped_config_matches_the_recorded_hub(hub, tmp_path, capsys):
    config = tmp_path / "cosmopedia.yaml"
    shutil.copy(REPO / "config" / "cosmopedia.yaml", config)
    assert cli.main(["lock", "--configfile", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("matches the Hub (9 sources)"), out
    # Pinned commits are checked, never moved; the file lists come from the listing.
    assert (
        "dataset_info",
        "HuggingFaceTB/cosmopedia",
        "0ae6ec63f91742bd2d1eaef4f02232c55d719385",
    ) in hub.calls
    assert ("model_info", MIXTRAL, "125c431e2ff41a156b9f9076f744d2f35dd6e67a") in hub.calls
    assert config.read_text() == (REPO / "config" / "cosmopedia.yaml").read_text()


def test_lock_fills_placeholders_and_keeps_the_rest_of_the_file(hub, tmp_path, capsys):
    # Which commits were main is not recorded: say so here, for the placeholders to resolve.
    hub.listing["datasets"]["HuggingFaceTB/cosmopedia"]["refs"]["main"] = COSMOPEDIA_SHA
    hub.listing["models"][MIXTRAL]["refs"]["main"] = "41bd4c9e7e4fb318ca40e721131d4933966c2cc1"
    text = (REPO / "config" / "cosmopedia.yaml").read_text()
    stanford = text.index("  stanford:")
    head, tail = text[:stanford], text[stanford:]
    files_start = tail.index("      data_files:\n")
    files_end = tail.index("    on_bad_rows")
    tail = (
        tail[:files_start]
        + "      data_files: [PLACEHOLDER.parquet]  # the dataset's files\n"
        + tail[files_end:]
    ).replace(
        "revision: 0ae6ec63f91742bd2d1eaef4f02232c55d719385", "revision: PLACEHOLDER-commit-sha", 1
    )
    text = head + tail.replace(
        "revision: 125c431e2ff41a156b9f9076f744d2f35dd6e67a", "revision: PLACEHOLDER", 1
    )
    config = tmp_path / "cosmopedia.yaml"
    config.write_text(text)
    with pytest.raises(Exception, match="placeholder"):
        plan.plan_shards(settings.validate_config(yaml.safe_load(text)))
    assert cli.main(["lock", "--configfile", str(config), "--check"]) == 1
    assert (
        "stanford: revision 'PLACEHOLDER-commit-sha' is commit 0ae6ec6" in capsys.readouterr().out
    )

    assert cli.main(["lock", "--configfile", str(config)]) == 0
    locked = config.read_text()
    pinned = yaml.safe_load(locked)
    hub_spec = pinned["sources"]["stanford"]["hub"]
    assert hub_spec["revision"] == "0ae6ec63f91742bd2d1eaef4f02232c55d719385"
    assert hub_spec["data_files"] == [
        f"data/stanford/train-{i:05d}-of-00013.parquet" for i in range(13)
    ]
    assert pinned["generation"]["revision"] == "41bd4c9e7e4fb318ca40e721131d4933966c2cc1"
    # Only those lines changed: every comment and every other source is as it was.
    original = (REPO / "config" / "cosmopedia.yaml").read_text().splitlines()
    assert [ln for ln in original if ln.lstrip().startswith("#")] == [
        ln for ln in locked.splitlines() if ln.lstrip().startswith("#")
    ]
    assert "      data_files:  # the dataset's files" in locked
    for name in ("stories_ultrachat", "openstax", "wikihow"):
        assert pinned["sources"][name] == yaml.safe_load("\n".join(original))["sources"][name]
    plan.plan_shards(settings.validate_config(pinned))  # plans, no placeholder left
    assert cli.main(["lock", "--configfile", str(config), "--check"]) == 0  # now it checks


def test_check_names_missing_and_extra_files(hub, tmp_path, capsys):
    config = yaml.safe_load((REPO / "config" / "cosmopedia.yaml").read_text())
    files = config["sources"]["auto_math_text"]["hub"]["data_files"]
    config["sources"]["auto_math_text"]["hub"]["data_files"] = files[1:] + ["data/web/x.jsonl"]
    del config["sources"]["khanacademy"]["hub"]["data_files_glob"]
    config["sources"]["khanacademy"]["hub"]["data_files"] = ["data/khanacademy/gone.parquet"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["lock", "--configfile", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "auto_math_text: data_files differ from math-ai/AutoMathText@40fd6b3" in out
    assert "1 to add (e.g. ['data/web/0.50-0.55.jsonl'])" in out
    assert "1 to drop (e.g. ['data/web/x.jsonl'])" in out
    assert "khanacademy: data/khanacademy/gone.parquet is not in HuggingFaceTB/cosmopedia" in out


def test_unknown_revision_is_reported_not_guessed(hub, tmp_path, capsys):
    config = yaml.safe_load((REPO / "config" / "cosmopedia.yaml").read_text())
    config["sources"]["openstax"]["hub"]["revision"] = "f" * 40
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["lock", "--configfile", str(path), "--source", "openstax"]) == 1
    assert "openstax: dataset HuggingFaceTB/openstax_paragraphs: revision 'ffff" in (
        capsys.readouterr().out
    )
    assert yaml.safe_load(path.read_text())["sources"]["openstax"]["hub"]["revision"] == "f" * 40


def test_edit_handles_flow_lists_and_quotes_odd_names():
    text = (
        "sources:\n  a:\n    hub:\n      revision: x  # keep\n      data_files: [b]\n"
        "    family: f\n"
    )
    new = lock.edit(
        text, {"a": {"revision": "c" * 40, "data_files": ["p: q.jsonl", "r.jsonl"]}}, None
    )
    assert yaml.safe_load(new)["sources"]["a"] == {
        "hub": {"revision": "c" * 40, "data_files": ["p: q.jsonl", "r.jsonl"]}, "family": "f"
    }  # fmt: skip
    assert f"revision: {'c' * 40}  # keep" in new
