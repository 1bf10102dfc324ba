"""A release that can't be faked: every tampering is caught by verify and by publish.

Each case tampers with a copy of a real demo release; `cosmopedia verify --integrity-only`
and `cosmopedia publish --dry-run` (real subprocesses of the CLI, with a timeout) must
both fail and name the file. Manifest edits come twice: as they are (SHA256SUMS, which
lists manifest.json, catches them) and with SHA256SUMS rewritten to match (the check of
the edited field catches them). Hostile paths point at fifos outside the release: were
one opened, the command would hang.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from conftest import BIN, DEMO_ROOT, workflow_env
from cosmopedia.release import checksums_text, root_sha256

pytestmark = pytest.mark.e2e

DATA = "data/web/web/web-00000.parquet"
OTHER_DATA = "data/stories/stories/stories-00001.parquet"
TIMEOUT_S = 60


def cosmopedia(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cosmopedia"), *args], cwd=cwd, env=workflow_env(), capture_output=True,
        text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


@pytest.fixture
def case(demo_run, tmp_path):
    """A fresh copy of the demo release, an empty working folder and an outside folder."""
    release = tmp_path / "release"
    shutil.copytree(demo_run / DEMO_ROOT / "dataset", release)
    (tmp_path / "outside").mkdir()
    (tmp_path / "work").mkdir()
    return release


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(release: Path) -> dict:
    return json.loads((release / "manifest.json").read_text())


def save(release: Path, manifest: dict, resum: bool) -> None:
    """Write an edited manifest; with `resum`, also SHA256SUMS to match it (a forger who
    knows the format), so that only the edited field's own check can catch it."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (release / "manifest.json").write_text(text)
    if resum:
        entries = [
            e
            for e in manifest.get("files", []) + manifest.get("other_files", [])
            if isinstance(e, dict) and isinstance(e.get("path"), str)
        ]
        sums = checksums_text(entries, sha256(text.encode()))
        (release / "SHA256SUMS").write_text(sums)


def reroot(manifest: dict) -> None:
    """Recompute both roots after an entry was changed (a forger who knows the formula)."""
    manifest["root_sha256"] = root_sha256(manifest["files"] + manifest["other_files"])
    manifest["data_root_sha256"] = root_sha256(manifest["files"])


def entry(manifest: dict, path: str) -> dict:
    return next(e for e in manifest["files"] + manifest["other_files"] if e["path"] == path)


def flip_byte(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


# --- the tamperings: each returns the texts the failure must name ----------------------


def extra_data_file(release, resum):
    shutil.copy(release / DATA, release / "data/web/web/web-99999.parquet")
    return ["data/web/web/web-99999.parquet: not in the manifest"]


def extra_dotfile(release, resum):
    (release / "data/.snakemake_timestamp").write_text("")
    return ["data/.snakemake_timestamp: not in the manifest"]


def edited_row_count(release, resum):
    manifest = load(release)
    entry(manifest, DATA)["rows"] += 1
    manifest["totals"]["rows"] += 1  # consistent totals: the file itself tells
    save(release, manifest, resum)
    return [f"{DATA}: 35 rows" if resum else "SHA256SUMS"]


def edited_stage_count(release, resum):
    manifest = load(release)
    manifest["stage_rows"]["by_shard"]["web/web-00000"]["read"] += 2
    manifest["stage_rows"]["total"]["read"] += 2
    save(release, manifest, resum)
    return ["shard web/web-00000" if resum else "SHA256SUMS", "manifest.json"]


def zero_root(release, resum):
    manifest = load(release)
    manifest["root_sha256"] = "0" * 64
    save(release, manifest, resum)
    return ["manifest.json: root_sha256" if resum else "SHA256SUMS", "manifest.json"]


def edited_config_value(release, resum):
    manifest = load(release)
    manifest["config"]["clean"]["min_tokens"] = 1
    save(release, manifest, resum)
    return ["manifest.json: config_sha256" if resum else "SHA256SUMS", "manifest.json"]


def dropped_entry(release, resum):
    manifest = load(release)
    manifest["files"] = [e for e in manifest["files"] if e["path"] != OTHER_DATA]
    manifest["totals"] = {
        k: sum(e[k] for e in manifest["files"]) for k in ("rows", "tokens")
    }  # fmt: skip
    reroot(manifest)
    save(release, manifest, resum)
    return [f"{OTHER_DATA}: not in the manifest"]


def no_files(release, resum):
    manifest = load(release)
    manifest["files"] = []
    save(release, manifest, resum)
    return ["manifest.json: files: empty", "manifest.json"]


def data_edited_with_new_hash(release, resum):
    data = flip_byte(release / DATA)
    manifest = load(release)
    entry(manifest, DATA)["sha256"] = sha256(data)
    save(release, manifest, resum)
    return ["manifest.json: root_sha256" if resum else "SHA256SUMS", "manifest.json"]


def data_rows_dropped_with_new_hashes_and_root(release, resum):
    """A forger who rewrites every hash still has to get the counts right."""
    pl.read_parquet(release / DATA).head(-1).write_parquet(release / DATA)
    manifest = load(release)
    data = (release / DATA).read_bytes()
    entry(manifest, DATA).update(sha256=sha256(data), bytes=len(data))
    reroot(manifest)
    save(release, manifest, resum)
    return [f"{DATA}: 34 rows" if resum else "SHA256SUMS"]


def changed_removed_rows(release, resum):
    flip_byte(release / "removed_rows.parquet")
    return ["removed_rows.parquet: sha256 differs"]


def changed_card(release, resum):
    card = release / "README.md"
    card.write_text(card.read_text().replace("Synthetic texts", "Human-written texts"))
    return ["README.md: "]


def changed_checksums(release, resum):
    sums = release / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("  README.md\n", "  README.txt\n"))
    return ["SHA256SUMS: does not match"]


def missing_checksums(release, resum):
    (release / "SHA256SUMS").unlink()
    return ["SHA256SUMS: missing"]


def not_json(release, resum):
    (release / "manifest.json").write_text('{"files": [')
    return ["manifest.json: not valid JSON"]


def integer_path(release, resum):
    manifest = load(release)
    manifest["files"][0]["path"] = 7
    save(release, manifest, resum)
    return ["manifest.json: files[0].path: expected a string, got integer"]


def string_bytes(release, resum):
    manifest = load(release)
    manifest["other_files"][0]["bytes"] = "12"
    save(release, manifest, resum)
    return ["manifest.json: other_files[0].bytes: expected an integer >= 0, got '12'"]


def outside_fifo(release) -> Path:
    """A fifo outside the release: opening it for reading would block forever."""
    fifo = release.parent / "outside" / "x"
    os.mkfifo(fifo)
    return fifo


def dotdot_path(release, resum):
    outside_fifo(release)
    manifest = load(release)
    entry(manifest, "README.md")["path"] = "../outside/x"
    reroot(manifest)
    save(release, manifest, resum)
    return ["manifest.json: other_files", "'../outside/x' has an empty, '.' or '..' part"]


def absolute_path(release, resum):
    fifo = outside_fifo(release)
    manifest = load(release)
    entry(manifest, "README.md")["path"] = str(fifo)
    reroot(manifest)
    save(release, manifest, resum)
    return [f"'{fifo}' is an absolute path"]


def dev_zero(release, resum):
    manifest = load(release)
    entry(manifest, "README.md")["path"] = "/dev/zero"
    reroot(manifest)
    save(release, manifest, resum)
    return ["'/dev/zero' is an absolute path"]


def symlink_to_outside(release, resum):
    outside = release.parent / "outside" / "copy.parquet"
    shutil.move(release / DATA, outside)
    (release / DATA).symlink_to(outside)
    return [f"{DATA}: a symbolic link, not a regular file; not read"]


def symlinked_folder(release, resum):
    folder = release / "data/web"
    shutil.move(folder, release.parent / "outside" / "web")
    folder.symlink_to(release.parent / "outside" / "web")
    return [f"{DATA}: missing: data/web is a symbolic link, not a folder"]


def fifo_in_release(release, resum):
    (release / DATA).unlink()
    os.mkfifo(release / DATA)
    return [f"{DATA}: a fifo, not a regular file; not read"]


def escaping_generation_key(release, resum):
    manifest = load(release)
    manifest["generation"]["../../../outside/escape"] = manifest["generation"].pop("web/web-00000")
    save(release, manifest, resum)
    return ["manifest.json: generation: '../../../outside/escape' is not <source>/<shard>"]


def escaping_dataset_name(release, resum):
    manifest = load(release)
    manifest["dataset"]["name"] = manifest["config"]["dataset"]["name"] = "../../outside"
    save(release, manifest, resum)
    return ["manifest.json: dataset.name: expected a name matching"]


TAMPERINGS = [
    extra_data_file, extra_dotfile, edited_row_count, edited_stage_count, zero_root,
    edited_config_value, dropped_entry, no_files, data_edited_with_new_hash,
    data_rows_dropped_with_new_hashes_and_root, changed_removed_rows, changed_card,
    changed_checksums, missing_checksums, not_json, integer_path, string_bytes,
    dotdot_path, absolute_path, dev_zero, symlink_to_outside, symlinked_folder,
    fifo_in_release, escaping_generation_key, escaping_dataset_name,
]  # fmt: skip
# Edits of manifest.json alone, which SHA256SUMS catches before anything else.
MANIFEST_EDITS = {
    edited_row_count, edited_stage_count, zero_root, edited_config_value,
    data_edited_with_new_hash, data_rows_dropped_with_new_hashes_and_root,
}  # fmt: skip


def assert_caught(release, expected):
    outside = sorted((release.parent / "outside").rglob("*"))
    verify = cosmopedia(
        "verify", "--manifest", str(release / "manifest.json"), "--integrity-only",
        cwd=release.parent / "work",
    )  # fmt: skip
    publish = cosmopedia(
        "publish", "--release", str(release), "--repo-id", "org/x", "--dry-run",
        cwd=release.parent / "work",
    )  # fmt: skip
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert publish.returncode == 2, publish.stderr
    for text in expected:
        assert text in verify.stdout, (text, verify.stdout)
        assert text in publish.stderr, (text, publish.stderr)
    for proc in (verify, publish):
        assert "Traceback" not in proc.stdout + proc.stderr
    assert "would upload" not in publish.stderr and "OK" not in verify.stdout
    # Nothing appeared or changed outside the release and the working folder.
    assert sorted((release.parent / "outside").rglob("*")) == outside
    assert sorted(p.name for p in release.parent.iterdir()) == ["outside", "release", "work"]
    return verify, publish


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda f: f.__name__)
def test_tampering_is_caught_by_verify_and_publish(tamper, case):
    expected = tamper(case, resum=True)
    assert_caught(case, expected)


@pytest.mark.parametrize("tamper", sorted(MANIFEST_EDITS, key=lambda f: f.__name__))
def test_manifest_edit_alone_is_caught_by_sha256sums(tamper, case):
    expected = tamper(case, resum=False)
    verify, _ = assert_caught(case, expected)
    assert "SHA256SUMS: does not match the manifest and manifest.json" in verify.stdout


def test_intact_release_passes_and_says_what_was_checked(case):
    verify = cosmopedia(
        "verify", "--manifest", str(case / "manifest.json"), "--integrity-only", cwd=case.parent
    )
    assert verify.returncode == 0, verify.stdout
    assert "verify: OK, integrity of 10 files checked" in verify.stdout
    assert "nothing rebuilt (--integrity-only)" in verify.stdout
    assert "rebuild matches" not in verify.stdout


def test_sha256sums_checks_with_coreutils(case):
    proc = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=case, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = {line.rsplit(": ", 1)[0] for line in proc.stdout.splitlines()}
    manifest = load(case)
    listed = {e["path"] for e in manifest["files"] + manifest["other_files"]}
    assert checked == listed | {"manifest.json"}
    # Every file of the release is either in SHA256SUMS or SHA256SUMS itself.
    on_disk = {str(p.relative_to(case)) for p in case.rglob("*") if not p.is_dir()}
    assert on_disk == checked | {"SHA256SUMS"}
    flip_byte(case / DATA)
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=case, capture_output=True)
    assert proc.returncode == 1 and f"{DATA}: FAILED".encode() in proc.stdout


def test_root_formula_is_documented_and_recomputable(case):
    manifest = load(case)
    entries = sorted(manifest["files"] + manifest["other_files"], key=lambda e: e["path"])
    text = "".join(f"{e['sha256']} {e['bytes']} {e['path']}\n" for e in entries)
    assert manifest["root_sha256"] == sha256(text.encode())
    assert "'<sha256> <bytes> <path>\\n'" in manifest["root_formula"]
    data = "".join(f"{e['sha256']} {e['bytes']} {e['path']}\n" for e in manifest["files"])
    assert manifest["data_root_sha256"] == sha256(data.encode())
    # The card shows the data root, never the root that covers the card.
    card = (case / "README.md").read_text()
    assert manifest["data_root_sha256"] in card and manifest["root_sha256"] not in card
    assert {e["path"] for e in manifest["other_files"]} == {"README.md", "removed_rows.parquet"}


def test_full_verify_refuses_an_escaping_generation_key_before_rebuilding(case, demo_run):
    escaping_generation_key(case, resum=True)
    work = case.parent / "work" / "rebuild"
    proc = cosmopedia(
        "verify", "--manifest", str(case / "manifest.json"), "--workdir", str(work),
        "--project-dir", str(demo_run), cwd=case.parent / "work",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "'../../../outside/escape' is not <source>/<shard>" in proc.stdout
    assert "not rebuilt: the manifest's fields are unsound" in proc.stdout
    assert not work.exists() and list((case.parent / "outside").iterdir()) == []


def publish_args(release, dry_run, receipt=None):
    return argparse.Namespace(
        release=str(release), repo_id="org/x", private=False, dry_run=dry_run, receipt=receipt
    )


@pytest.fixture
def hub(monkeypatch):
    """The Hub's network boundary, recorded instead of called."""
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_test_not_a_real_token")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **kw: calls.append(("repo", kw)))

    def create_commit(self, **kw):
        calls.append(("commit", kw))
        return argparse.Namespace(oid="f" * 40)

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def test_publish_uploads_exactly_the_list_its_dry_run_prints(case, hub, tmp_path):
    from cosmopedia import release

    dry = tmp_path / "dry.json"
    assert release.main(publish_args(case, dry_run=True, receipt=str(dry))) == 0
    assert hub == []
    listed = [f["path"] for f in json.loads(dry.read_text())["files"]]
    assert release.main(publish_args(case, dry_run=False)) == 0
    (_, repo), (_, commit) = hub
    assert repo["repo_type"] == "dataset" and commit["repo_type"] == "dataset"
    uploaded = [op.path_in_repo for op in commit["operations"]]
    assert uploaded == listed
    assert [Path(op.path_or_fileobj) for op in commit["operations"]] == [case / p for p in listed]
    on_disk = sorted(str(p.relative_to(case)) for p in case.rglob("*") if not p.is_dir())
    assert sorted(uploaded) == on_disk


def test_publish_uploads_nothing_from_a_tampered_release(case, hub):
    from cosmopedia import release
    from cosmopedia.errors import CliError

    extra_dotfile(case, resum=True)
    with pytest.raises(CliError, match="data/.snakemake_timestamp: not in the manifest"):
        release.main(publish_args(case, dry_run=False))
    assert hub == []


def test_full_verify_refuses_to_run_commands_a_manifest_names(case, demo_run):
    """A sound manifest whose config makes the rebuild run a program of its choosing (the
    engine program, here) is not rebuilt unless the user says they trust it."""
    from cosmopedia.settings import canonical_json

    manifest = load(case)
    marker = case.parent / "outside" / "ran"
    server = manifest["config"]["generation"]["server"]
    server["program"] = ["sh", "-c", f"touch {marker}"]
    manifest["config_sha256"] = sha256(canonical_json(manifest["config"]).encode())
    save(case, manifest, resum=True)
    work = case.parent / "work" / "rebuild"
    proc = cosmopedia(
        "verify", "--manifest", str(case / "manifest.json"), "--workdir", str(work),
        "--project-dir", str(demo_run), cwd=case.parent / "work",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the rebuild would run commands it names (generation.server.program)" in proc.stdout
    assert "--trust-manifest" in proc.stdout
    assert not work.exists() and not marker.exists()
