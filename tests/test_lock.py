"""cosmopedia lock: Hub revisions, file lists and row counts pinned or checked, offline,
against a recorded Hub listing (tests/fixtures/hub_listing.json) behind a stand-in for
HfApi. The listing holds no row counts (the pages it was recorded from show none): the
tests of row counts give files synthetic ones."""

from __future__ import annotations

import copy
import json
import os
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


class RecordedRows:
    """lock.HubRows answered from a table: (repo_id, path) -> rows; a JSONL file only with
    count_jsonl, as the real one (None for a file not in the table)."""

    def __init__(self):
        self.table: dict[tuple[str, str], int] = {}
        self.count_jsonl = False
        self.calls: list[tuple] = []

    def rows(self, repo_id, revision, path):
        self.calls.append((repo_id, revision, path))
        if not path.endswith(".parquet") and not self.count_jsonl:
            return None
        return self.table.get((repo_id, path))


@pytest.fixture
def hub(monkeypatch):
    recorded = RecordedHub(copy.deepcopy(LISTING))
    recorded.row_counter = RecordedRows()

    def hub_rows(count_jsonl=False):
        recorded.row_counter.count_jsonl = count_jsonl
        return recorded.row_counter

    monkeypatch.setattr(lock, "hub_api", lambda: recorded)
    monkeypatch.setattr(lock, "hub_rows", hub_rows)
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


ULTRACHAT = "HuggingFaceTB/ultrachat_questions_about_world"
ULTRACHAT_FILES = [f"data/train-{i:05d}-of-00009.parquet" for i in range(9)]


def test_lock_records_row_counts_and_check_compares_them(hub, tmp_path, capsys):
    # Synthetic counts (577,819 rows in all, as the card says; not the real split).
    counts = {f: 64_202 for f in ULTRACHAT_FILES[:-1]} | {ULTRACHAT_FILES[-1]: 64_203}
    hub.row_counter.table = {(ULTRACHAT, f): n for f, n in counts.items()}
    config = tmp_path / "cosmopedia.yaml"
    shutil.copy(REPO / "config" / "cosmopedia.yaml", config)
    argv = ["lock", "--configfile", str(config), "--source", "stories_ultrachat"]
    assert cli.main([*argv, "--check"]) == 1  # counts the config does not record yet
    assert "data/train-00000-of-00009.parquet has 64202 rows (not in row_counts)" in (
        capsys.readouterr().out
    )
    assert cli.main(argv) == 0
    text = config.read_text()
    assert "      row_counts:\n        data/train-00000-of-00009.parquet: 64202\n" in text
    loaded = yaml.safe_load(text)["sources"]["stories_ultrachat"]
    assert loaded["hub"]["row_counts"] == counts
    assert sum(counts.values()) == 577_819
    # Read from the files' footers at the pinned commit, one call per file.
    assert {c[1] for c in hub.row_counter.calls} == {loaded["hub"]["revision"]}
    assert cli.main([*argv, "--check"]) == 0
    capsys.readouterr()

    # Now the source can be split: 25,000 prompts per job, 5 styles -> 5,000 questions.
    pinned = yaml.safe_load(text)
    pinned["sources"] = {"stories_ultrachat": loaded | {"prompts_per_shard": 25_000}}
    shards = plan.plan_shards(settings.validate_config(pinned))
    assert len(shards) == 9 * 13 and shards[0].name == "train-00000-of-00009_r000000-004999"
    assert sum(plan.planned_prompts(settings.validate_config(pinned)).values()) == 577_819 * 5

    hub.row_counter.table[(ULTRACHAT, ULTRACHAT_FILES[3])] = 64_000
    assert cli.main([*argv, "--check"]) == 1
    assert "data/train-00003-of-00009.parquet has 64000 rows, row_counts says 64202" in (
        capsys.readouterr().out
    )


def test_a_split_source_needs_every_count(hub, tmp_path, capsys):
    """OpenStax's one JSONL file has no footer: counted only with --count-jsonl."""
    config = yaml.safe_load((REPO / "config" / "cosmopedia.yaml").read_text())
    config["sources"]["openstax"]["rows_per_shard"] = 20
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    hub.row_counter.table = {("HuggingFaceTB/openstax_paragraphs", "openstax_books.jsonl"): 77}
    argv = ["lock", "--configfile", str(path), "--source", "openstax"]
    assert cli.main(argv) == 1
    assert "openstax: no row count for 1 data file(s) (e.g. openstax_books.jsonl)" in (
        capsys.readouterr().out
    )
    with pytest.raises(plan.PlanError, match="row_counts has none for openstax_books.jsonl"):
        plan.plan_shards(settings.validate_config(yaml.safe_load(path.read_text())))
    assert cli.main([*argv, "--count-jsonl"]) == 0
    locked = settings.validate_config(yaml.safe_load(path.read_text()))
    assert locked["sources"]["openstax"]["hub"]["row_counts"] == {"openstax_books.jsonl": 77}
    assert len([s for s in plan.plan_shards(locked) if s.source == "openstax"]) == 4


def test_hub_rows_reads_a_parquet_footer_and_counts_jsonl_lines(tmp_path):
    """The real counter, on a stand-in for HfFileSystem: a Parquet file's count comes from
    its last bytes only; JSONL lines are counted (blank ones are not rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": [os.urandom(100).hex() for _ in range(20_000)]}),  # ~4 MB
        tmp_path / "a.parquet",
        row_group_size=5_000,
    )
    (tmp_path / "b.jsonl").write_text('{"t": 1}\n\n{"t": 2}\n{"t": 3}\n')

    class Files:
        read = 0
        opened: list[str] = []

        def open(self, path, mode="rb"):
            self.opened.append(path)
            f = open(tmp_path / path.rsplit("/", 1)[1], mode)  # noqa: SIM115
            real_read = f.read

            def read(n=-1):
                data = real_read(n)
                Files.read += len(data)
                return data

            f.read = read
            return f

    rows = lock.HubRows(fs=Files())
    assert rows.rows("org/data", "refs/convert/parquet", "dir/a.parquet") == 20_000
    assert Files.opened == ["datasets/org/data@refs%2Fconvert%2Fparquet/dir/a.parquet"]
    assert 0 < Files.read < (tmp_path / "a.parquet").stat().st_size / 10
    assert rows.rows("org/data", "main", "b.jsonl") is None  # not without count_jsonl
    assert lock.HubRows(count_jsonl=True, fs=Files()).rows("org/data", "main", "b.jsonl") == 3


def test_edit_adds_and_replaces_row_counts():
    text = (
        "sources:\n  a:\n    hub:\n      revision: x\n      data_files:\n        - b.parquet\n"
        "      split: train\n    family: f\n"
    )
    pinned = {"revision": "x", "data_files": ["b.parquet"], "row_counts": {"b.parquet": 3}}
    new = lock.edit(text, {"a": pinned}, None)
    assert yaml.safe_load(new)["sources"]["a"]["hub"] == {
        "revision": "x", "data_files": ["b.parquet"], "row_counts": {"b.parquet": 3},
        "split": "train",
    }  # fmt: skip
    pinned["row_counts"] = {"b.parquet": 4}
    newer = lock.edit(new, {"a": pinned}, None)
    assert yaml.safe_load(newer)["sources"]["a"]["hub"]["row_counts"] == {"b.parquet": 4}
    assert newer.count("row_counts") == 1
