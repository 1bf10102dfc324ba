"""Secrets stay in the environment: real Snakemake runs with a (fake) HF_TOKEN and an
endpoint URL with credentials write them to no output, log, provenance, manifest or
Snakemake metadata file, and show them on no command line while the run goes on."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_ROOT, make_workdir, run_snakemake, snakemake_command, workflow_env
from threaded_dummy import ThreadedDummy

pytestmark = pytest.mark.e2e

FAKE_TOKEN = "hf_FakeTokenForTheSecretsTest0123456789"
USER = "cosmo"
PASSWORD = "Pw-FakePasswordForTheSecretsTest-4711"
API_KEY = "Key-FakeQueryKeyForTheSecretsTest-0815"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (FAKE_TOKEN, PASSWORD, API_KEY, BASIC.split()[1])


def small_demo(workdir, generation: dict | None = None) -> None:
    """The demo reduced to one seed file and light MinHash settings (a quick run)."""
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    stories = config["sources"]["stories"]
    first = sorted((workdir / "resources").glob("demo/seeds/stories/*.jsonl"))[0]
    stories["files"] = str(first.relative_to(workdir))
    config["sources"] = {"stories": stories}
    config["minhash"] = {"tokenizer": "whitespace", "num_buckets": 1}
    config["generation"] = {**config["generation"], "instances": 2, **(generation or {})}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def files_holding(workdir: Path, secrets, skip=()) -> tuple[list[str], int]:
    """(files under `workdir` that contain one of `secrets`, files scanned)."""
    found, scanned = [], 0
    for dirpath, _, filenames in os.walk(workdir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or Path(path) in skip:
                continue
            with open(path, "rb") as f:
                data = f.read()
            found += [f"{path}: {s[:6]}..." for s in secrets if s.encode() in data]
            scanned += 1
    return found, scanned


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
    found, scanned = files_holding(workdir, [FAKE_TOKEN])
    assert not found
    assert scanned > 20


class CommandLines:
    """Polls /proc/*/cmdline while a run goes on: the ones holding a secret, and how many
    `cosmopedia generate` command lines it saw (the poll saw the jobs)."""

    def __init__(self, secrets):
        self.secrets = [s.encode() for s in secrets]
        self.leaks: list[str] = []
        self.generate_seen = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        seen = set()
        while not self.stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                if (
                    b"cosmopedia generate" in cmdline.replace(b"\0", b" ")
                    and entry.name not in seen
                ):
                    seen.add(entry.name)
                    self.generate_seen += 1
                if any(s in cmdline for s in self.secrets):
                    self.leaks.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def check_credentials(request) -> str | None:
    """The endpoint's check: the URL's userinfo as Basic auth, its query parameters."""
    if request.headers.get("Authorization") != BASIC:
        return f"Authorization {str(request.headers.get('Authorization'))[:12]}..."
    if request.query.get("api_key") != API_KEY or request.query.get("tenant") != "demo":
        return f"query {sorted(request.query)}"
    return None


def test_endpoint_credentials_reach_the_endpoint_and_nothing_else(tmp_path, monkeypatch):
    """user:password and ?api_key= in endpoint_url, HF_TOKEN in the environment: the
    endpoint gets the credentials as the URL meant them (Basic auth, the query parameter,
    on /health, /info and every generation), and no file under results/ or .snakemake/,
    no log and no command line during the run holds any of them."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    workdir = make_workdir(tmp_path / "work")
    # About 0.1 s per request and 4 in flight: the jobs run long enough to be seen.
    with ThreadedDummy(check_credentials, latency_per_token=0.0002) as dummy:
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{dummy.port}/?api_key={API_KEY}&tenant=demo"
        small_demo(
            workdir,
            {"engine": "endpoint", "endpoint_url": url, "instances": 1, "concurrency": 4},
        )
        configfile = workdir / "config" / "config.yaml"
        target = str(DEMO_ROOT / "dataset" / "manifest.json")
        command = snakemake_command(workdir, "--cores", "2", "--printshellcmds", target)
        with CommandLines(SECRETS) as cmdlines:
            proc = subprocess.run(command, capture_output=True, text=True, env=workflow_env())
        assert proc.returncode == 0, proc.stderr[-4000:]

    assert not dummy.refused, dummy.refused[:5]
    paths = {r.path for r in dummy.received}
    assert {"/health", "/info"} <= paths and dummy.stats["ok"] > 10
    assert all(r.authorization == BASIC for r in dummy.received)  # not the HF token
    assert all(dict(r.query) == {"api_key": API_KEY, "tenant": "demo"} for r in dummy.received)

    assert cmdlines.generate_seen >= 1  # the poll saw the generate job's command line
    assert not cmdlines.leaks, cmdlines.leaks[:3]
    assert not [s for s in SECRETS if s in proc.stdout + proc.stderr]
    # Everything the run wrote (results/, .snakemake/, logs), but the user's own config.
    found, scanned = files_holding(workdir, SECRETS, skip={configfile})
    assert not found, found
    assert scanned > 20
    manifest = yaml.safe_load((workdir / DEMO_ROOT / "dataset" / "manifest.json").read_text())
    clean = f"http://127.0.0.1:{dummy.port}/?tenant=demo"
    assert manifest["config"]["generation"]["endpoint_url"] == clean
