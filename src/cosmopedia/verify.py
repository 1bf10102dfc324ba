"""Verify a dataset version: rebuild it from its manifest and compare, file by file.

1. Integrity: the release beside the manifest, by the check publish also runs
   (cosmopedia.release.check_release: every file, the roots, SHA256SUMS, the counts); a
   manifest from the Hub is checked on its own (its fields, roots and totals). A manifest
   whose fields are unsound is never rebuilt from: every name that becomes a path is
   checked first, so nothing is written outside the working directory.
2. Rebuild: the manifest's resolved config (or a config file to check against it) runs the
   workflow in a fresh working directory. Generations are reused from a cache (a previous
   results folder) for every shard whose generation provenance matches the manifest, so
   a rebuild needs no GPU; other shards are generated again.
3. Compare: config keys, released files (sha256, rows) and row counts of every step of
   every shard. Every difference is printed; any difference exits non-zero.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from cosmopedia import redact, release, settings, yamlfile
from cosmopedia.dataset import MANIFEST_GENERATION_KEYS
from cosmopedia.errors import CliError
from cosmopedia.io import read_json
from cosmopedia.layout import global_path, shard_path
from cosmopedia.plan import results_root

log = logging.getLogger("cosmopedia.verify")

# Never linked into a rebuild directory: outputs and state of the original run.
NOT_LINKED = {"results", ".snakemake", ".git", ".venv"}


def flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, sub in value.items():
            out |= flatten(sub, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def config_differences(expected: dict, actual: dict) -> list[str]:
    a, b = flatten(expected), flatten(actual)
    return [
        f"config {key}: manifest {a.get(key, '(absent)')!r}, rebuild {b.get(key, '(absent)')!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def manifest_differences(expected: dict, actual: dict) -> list[str]:
    problems = config_differences(expected["config"], actual["config"])
    want = {f["path"]: f for f in expected["files"] + expected["other_files"]}
    got = {f["path"]: f for f in actual["files"] + actual["other_files"]}
    for path in sorted(set(want) | set(got)):
        if path not in got:
            problems.append(f"{path}: in the manifest, not rebuilt")
        elif path not in want:
            problems.append(f"{path}: rebuilt, not in the manifest")
        elif want[path]["sha256"] != got[path]["sha256"]:
            rows = (
                f" (rows {want[path]['rows']} -> {got[path]['rows']})"
                if "rows" in want[path]
                else ""
            )
            problems.append(f"{path}: sha256 differs{rows}")
    want_rows, got_rows = expected["stage_rows"]["by_shard"], actual["stage_rows"]["by_shard"]
    for shard in sorted(set(want_rows) | set(got_rows)):
        for stage in want_rows.get(shard, got_rows.get(shard, {})):
            a = want_rows.get(shard, {}).get(stage)
            b = got_rows.get(shard, {}).get(stage)
            if a != b:
                problems.append(f"shard {shard}, step {stage}: rows {a} -> {b}")
    if not problems and expected["root_sha256"] != actual["root_sha256"]:
        problems.append("root sha256 differs")
    return problems


def check_manifest(ref: str) -> tuple[release.Integrity, str]:
    """Integrity of a release by its manifest path (or its folder), or of a manifest from
    the Hub (`hf://datasets/<repo>[@revision]`, on its own); and what was checked."""
    if ref.startswith("hf://datasets/"):
        from huggingface_hub import hf_hub_download

        repo, _, revision = ref.removeprefix("hf://datasets/").partition("@")
        path = hf_hub_download(
            repo, release.MANIFEST, repo_type="dataset", revision=revision or None
        )
        manifest, problem = release.load_manifest_bytes(Path(path).read_bytes())
        problems = [problem] if problem else release.manifest_problems(manifest)
        result = release.Integrity(problems, manifest=manifest, usable=not problems)
        return result, "the manifest's fields, roots and totals (no release files downloaded)"
    path = Path(ref)
    if path.is_dir():
        path = path / release.MANIFEST
    if path.name != release.MANIFEST:
        raise CliError(f"{ref}: a release's manifest is <release folder>/{release.MANIFEST}")
    result = release.check_release(path.parent)
    return result, result.checked(path.parent)


def resolve_config(config_file: str) -> dict:
    """A config file as the workflow sees it: validated, defaults filled in."""
    return redact.config(settings.validate_config(yamlfile.read(config_file)))


def prepare_workdir(workdir: Path, project_dir: Path, config: dict) -> None:
    """Link the project's inputs (seeds, templates, benchmarks) and write the config."""
    workdir.mkdir(parents=True, exist_ok=True)
    for entry in project_dir.iterdir():
        if entry.name not in NOT_LINKED and not (workdir / entry.name).exists():
            (workdir / entry.name).symlink_to(entry.resolve())
    (workdir / "verify-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def reuse_generations(manifest: dict, cache_root: Path, root: str, workdir: Path) -> list[str]:
    """Copy cached generations whose provenance matches the manifest; the shard keys reused."""
    reused = []
    for key, expected in sorted(manifest["generation"].items()):
        # Checked with the manifest already; a name must never lead out of the workdir.
        if not release.SHARD_KEY.fullmatch(key):
            raise CliError(f"manifest generation key {key!r} is not <source>/<shard>")
        source, shard = key.split("/", 1)
        prov_path = cache_root / shard_path(".", "generation_provenance", source, shard)
        data_path = cache_root / shard_path(".", "generations", source, shard)
        if not (prov_path.is_file() and data_path.is_file()):
            continue
        cached = read_json(prov_path)
        if {k: cached.get(k) for k in MANIFEST_GENERATION_KEYS if k in expected} != expected:
            continue
        for src, rel in ((data_path, "generations"), (prov_path, "generation_provenance")):
            dst = workdir / shard_path(root, rel, source, shard)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)  # fresh mtime: newer than the rebuilt prompts
        reused.append(key)
    return reused


def default_snakefile(project_dir: Path) -> Path:
    """The project's workflow, else the one of the checkout this package runs from."""
    checkout = Path(__file__).resolve().parents[2]  # src/cosmopedia/verify.py
    for candidate in (project_dir, checkout):
        if (candidate / "workflow" / "Snakefile").is_file():
            return candidate / "workflow" / "Snakefile"
    raise CliError(f"no workflow/Snakefile in {project_dir} or {checkout}: give --snakefile")


def snakemake(workdir: Path, snakefile: Path, cores: int, *extra: str) -> None:
    bin_dir = Path(sys.executable).parent
    cmd = [
        str(bin_dir / "snakemake"), "-s", str(snakefile), "--directory", str(workdir),
        "--configfile", str(workdir / "verify-config.yaml"), "--cores", str(cores), "--quiet",
        *extra,
    ]  # fmt: skip
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CliError(f"rebuild failed in {workdir}:\n{proc.stderr[-4000:]}")


def verify(args) -> tuple[list[str], str]:
    """Every difference found, and what was checked."""
    integrity, checked = check_manifest(args.manifest)
    problems = integrity.problems
    if args.integrity_only:
        return problems, f"{checked}; nothing rebuilt (--integrity-only)"
    if not integrity.usable:
        return problems, f"{checked}; not rebuilt: the manifest's fields are unsound"
    manifest = integrity.manifest

    if args.configfile:
        config = resolve_config(args.configfile)
    else:
        config = manifest["config"]
        try:  # the config is what the rebuild runs: the schema's checks apply to it too
            settings.validate_config(config)
        except CliError as exc:
            message = str(exc).strip().splitlines()[0]
            return [*problems, f"manifest.json: config: {message}"], f"{checked}; not rebuilt"
        if (commands := command_settings(config)) and not args.trust_manifest:
            problem = (
                f"manifest.json: config: the rebuild would run commands it names "
                f"({', '.join(commands)}); review them and pass --trust-manifest, or give "
                "your own --configfile"
            )
            return [*problems, problem], f"{checked}; not rebuilt"
    project_dir = Path(args.project_dir).resolve()
    root = results_root(config)
    cache_root = Path(args.cache) if args.cache else project_dir / root
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cosmopedia-verify-"))
    prepare_workdir(workdir, project_dir, config)
    snakefile = Path(args.snakefile) if args.snakefile else default_snakefile(project_dir)

    # Seeds and prompts first, so that reused generations are newer than their prompts.
    snakemake(workdir, snakefile, args.cores, "--until", "prompts")
    reused = reuse_generations(manifest, cache_root, root, workdir) if cache_root.exists() else []
    log.info(
        "reusing cached generations of %d of %d shards", len(reused), len(manifest["generation"])
    )
    snakemake(workdir, snakefile, args.cores)
    rebuilt = read_json(workdir / global_path(root, "manifest"))
    return problems + manifest_differences(manifest, rebuilt), f"{checked}; rebuilt in {workdir}"


def command_settings(config: dict) -> list[str]:
    """The generation keys of a config that choose programs or their arguments: a
    manifest from someone else must not run commands of its choosing on this machine."""
    server = config.get("generation", {}).get("server", {})
    found = [f"generation.server.{key}" for key in ("program", "image", "env") if server.get(key)]
    found += [f"generation.server.{k}" for k in ("launcher_args", "extra_args") if server.get(k)]
    if server.get("launcher", "native") != "native":
        found.append("generation.server.launcher")
    return found


def add_arguments(name, parser):
    parser.add_argument(
        "--manifest", required=True, help="manifest.json path or hf://datasets/REPO[@REV]"
    )
    parser.add_argument("--configfile", help="check this config instead of the manifest's")
    parser.add_argument("--project-dir", default=".", help="where seeds/templates/benchmarks live")
    parser.add_argument("--cache", help="results folder whose generations may be reused")
    parser.add_argument("--workdir", help="rebuild here (default: a new temporary folder)")
    parser.add_argument(
        "--trust-manifest",
        action="store_true",
        help="rebuild even if the manifest's config names programs or their arguments",
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--snakefile", help="default: PROJECT_DIR/workflow/Snakefile, else this checkout's"
    )
    parser.add_argument(
        "--integrity-only", action="store_true", help="only check the files beside the manifest"
    )


def main(args) -> int:
    problems, checked = verify(args)
    for problem in problems:
        print(f"MISMATCH {problem}")
    if problems:
        print(f"verify: {len(problems)} difference(s); checked: {checked}")
        return 1
    if args.integrity_only:
        print(f"verify: OK, {checked}")
    else:
        print(f"verify: OK, {checked}, and the rebuild matches the manifest")
    return 0
