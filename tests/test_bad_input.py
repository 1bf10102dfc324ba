"""Bad input never half-breaks a run.

Every case below either stops with one clear error naming the file, row, column or
config key and leaves no output behind, or, where the config says so
(`sources.<name>.on_bad_rows: quarantine`), sets the bad rows aside in a quarantine report
with their count beside the seed shard. Config and template mistakes stop the run at
parse time, before any job. Cases already covered elsewhere:
tests/test_ingest.py (malformed JSON, invalid UTF-8, non-string and whitespace-only text,
missing column, duplicate ids from an id column), tests/test_prompts.py (unknown style,
template missing its placeholder) and tests/test_workflow_e2e.py (wrong type or unknown
key in the config, through a real dry-run).
"""

from __future__ import annotations

import json
import re
import subprocess

import polars as pl
import pytest
import yaml

from conftest import BIN, REPO, make_workdir, run_snakemake
from cosmopedia import hub
from cosmopedia.errors import CliError, PlanError
from cosmopedia.io import read_parquet_metadata
from cosmopedia.plan import plan_shards
from cosmopedia.settings import validate_config
from test_ingest import WEB, run_ingest, write_lines

QUARANTINE = WEB | {"on_bad_rows": "quarantine"}


def failed(tmp_path, caplog, path, settings, message):
    """Run ingest, expect exit code 2 with `message` logged and no output files."""
    code, out, quarantine = run_ingest(tmp_path, path, settings)
    assert code == 2
    assert message in caplog.text
    assert not out.exists() and not quarantine.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True  # no temp files


# --- rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "unterminated', "a.jsonl:2: malformed JSON"),
        (b"[1, 2]", "a.jsonl:2: expected a JSON object per line"),
        (b'{"text": "caf\xe9"}', "a.jsonl:2: invalid UTF-8"),
        (b'{"body": "renamed"}', "row 1: missing column 'text'"),
        (b'{"text": ""}', "row 1, column 'text': empty text"),
        (b'{"text": " \\t\\n "}', "row 1, column 'text': empty text"),
        (b'{"text": null}', "row 1, column 'text': empty text"),
        (b'{"text": ["a", "list"]}', "row 1, column 'text': expected a string, got list"),
        (b'{"text": {"a": 1}}', "row 1, column 'text': expected a string, got dict"),
        (b'{"text": "ok", "topic": 7}', "row 1, column 'topic': expected a string, got int"),
    ],
)
def test_bad_row_fails_naming_file_row_and_column(tmp_path, caplog, line, message):
    path = write_lines(tmp_path / "a.jsonl", [b'{"text": "fine"}', line, b'{"text": "fine"}'])
    failed(tmp_path, caplog, path, WEB, message)


def test_bad_rows_are_quarantined_with_their_count(tmp_path):
    lines = [
        b'{"text": "fine"}',
        b'{"text": "unterminated',
        b'{"text": "caf\xe9"}',
        b'{"text": "   "}',
        b'{"text": 42}',
        b'{"text": "also fine"}',
    ]
    code, out, quarantine = run_ingest(
        tmp_path, write_lines(tmp_path / "a.jsonl", lines), QUARANTINE
    )
    assert code == 0
    assert pl.read_parquet(out)["text"].to_list() == ["fine", "also fine"]
    report = json.loads(quarantine.read_text())
    assert report["count"] == 4 == len(report["rows"])
    assert [r["row"] for r in report["rows"]] == [1, 2, 3, 4]
    assert report["rows"][1]["raw"] == '{"text": "caf\ufffd"}'  # undecodable bytes replaced


def test_renamed_column_in_a_parquet_file_fails_even_when_quarantining(tmp_path, caplog):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"body": ["x", "y"]}).write_parquet(path)
    failed(tmp_path, caplog, path, QUARANTINE, "no column 'text'")
    assert "the file has body; map it with sources.web.columns.text" in caplog.text


def test_renamed_column_in_jsonl_fails_when_every_row_is_bad(tmp_path, caplog):
    path = write_lines(tmp_path / "a.jsonl", [b'{"body": "x"}', b'{"body": "y"}'])
    failed(tmp_path, caplog, path, QUARANTINE, "all 2 rows are bad, nothing left to ingest")
    assert "first: " in caplog.text and "missing column 'text'" in caplog.text


def test_non_string_column_in_parquet(tmp_path, caplog):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"text": [1, 2]}).write_parquet(path)
    failed(tmp_path, caplog, path, WEB, "row 0, column 'text': expected a string, got int")


def test_ten_megabyte_document(tmp_path, caplog):
    big = "word " * (2 * 1024 * 1024)  # 10 MiB of text on one line
    path = write_lines(
        tmp_path / "a.jsonl", [b'{"text": "fine"}', json.dumps({"text": big}).encode()]
    )
    failed(
        tmp_path,
        caplog,
        path,
        WEB,
        "row 1, column 'text': 10,485,760 characters, more than sources.web.max_chars (1,000,000)",
    )
    # Quarantined: the report keeps only the start of the row.
    code, out, quarantine = run_ingest(tmp_path, path, QUARANTINE)
    assert code == 0 and pl.read_parquet(out).height == 1
    (row,) = json.loads(quarantine.read_text())["rows"]
    assert len(row["raw"]) == 2000 and quarantine.stat().st_size < 10_000
    # A raised limit takes it; the prompt builder keeps the first 1,000 characters.
    code, out, _ = run_ingest(tmp_path, path, WEB | {"max_chars": 20_000_000})
    assert code == 0 and pl.read_parquet(out)["text"].str.len_chars().max() == len(big.strip())


def test_duplicate_ids_quarantine_keeps_the_first(tmp_path):
    path = write_lines(
        tmp_path / "a.jsonl",
        [b'{"id": "x", "text": "a"}', b'{"id": "y", "text": "b"}', b'{"id": "x", "text": "c"}'],
    )
    code, out, quarantine = run_ingest(tmp_path, path, QUARANTINE | {"id_column": "id"})
    assert code == 0
    assert pl.read_parquet(out)["text"].to_list() == ["a", "b"]
    (row,) = json.loads(quarantine.read_text())["rows"]
    assert "row 2: duplicate id 'web/x' (first at row 0)" in row["error"]


@pytest.mark.parametrize("kind", ["empty", "blank_lines", "parquet", "zst"])
def test_empty_shard(tmp_path, caplog, kind):
    if kind == "empty":
        path = tmp_path / "a.jsonl"
        path.write_bytes(b"")
    elif kind == "blank_lines":
        path = tmp_path / "a.jsonl"
        path.write_bytes(b"\n  \n\n")
    elif kind == "parquet":
        path = tmp_path / "a.parquet"
        pl.DataFrame({"text": []}, schema={"text": pl.String}).write_parquet(path)
    else:
        import zstandard

        path = tmp_path / "a.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(b""))
    failed(tmp_path, caplog, path, QUARANTINE, "empty shard: the seed file has no rows")


def test_unreadable_file(tmp_path, caplog):
    path = tmp_path / "a.parquet"
    path.write_bytes(b"not parquet at all")
    failed(tmp_path, caplog, path, WEB, "a.parquet: cannot read seed file")


def test_unreachable_hub_dataset(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    revision = "0123456789abcdef0123456789abcdef01234567"
    spec = {"repo_id": "example-org/no-such-seeds", "revision": revision, "split": "train"}
    ref = hub.shard_ref(spec["repo_id"], revision, "data/train-00000-of-00004.parquet")
    failed(
        tmp_path,
        caplog,
        ref,
        WEB | {"hub": spec},
        f"sources.web: Hub dataset example-org/no-such-seeds at revision {revision}, "
        "file data/train-00000-of-00004.parquet: cannot open",
    )
    assert "HF_HUB_OFFLINE is set" in caplog.text


def test_missing_hub_file(tmp_path, caplog, monkeypatch):
    from test_ingest import make_hub_folder

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_hub_folder(tmp_path / "local")  # opened as repository local/repo
    monkeypatch.chdir(tmp_path)
    spec = {"repo_id": "local/repo", "revision": "v1", "split": "train"}
    ref = hub.shard_ref("local/repo", "v1", "data/train-00009-of-00010.parquet")
    failed(
        tmp_path,
        caplog,
        ref,
        WEB | {"hub": spec},
        "file data/train-00009-of-00010.parquet: cannot open: FileNotFoundError",
    )


# --- config and templates: stopped at parse time -----------------------------------------


def demo_config(**source_changes):
    with open(REPO / "config" / "config.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["sources"]["web"].update(source_changes)
    return config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stlyes": ["blogpost"]}, "'stlyes' was unexpected"),
        ({"on_bad_rows": "sometimes"}, "'sometimes' is not one of ['fail', 'quarantine']"),
        ({"max_chars": "big"}, "'big' is not of type 'integer'"),
        ({"family": "poems"}, "'poems' is not one of"),
        ({"styles": "blogpost"}, "'blogpost' is not of type 'array'"),
        ({"hub": {"repo_id": "a/b", "data_files": ["x.parquet"]}}, "'revision' is a required"),
        (
            {"hub": {"repo_id": "a/b", "revision": "v1", "data_files": ["x.csv"]}},
            "'x.csv' does not match",
        ),
        (
            {"hub": {"repo_id": "a/b", "revision": "v1", "data_files": ["x.parquet"], "spilt": 1}},
            "'spilt' was unexpected",
        ),
    ],
)
def test_config_wrong_type_or_unknown_key_is_named(change, message):
    with pytest.raises(CliError) as info:
        validate_config(demo_config(**change))
    assert message in str(info.value)
    assert str(info.value).startswith("sources.web")  # the message names the key


def plan(config, monkeypatch):
    monkeypatch.chdir(REPO)
    return plan_shards(validate_config(config))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"styles": ["blogpost", "poem"]}, "sources.web.styles: web_samples: unknown style 'poem'"),
        ({"audiences": ["college"]}, "sources.web.audiences: family web_samples picks styles"),
        (
            {"hub": {"repo_id": "a/b", "revision": "v1", "data_files": ["x.parquet"]}},
            "sources.web: give either files (local seed files) or hub",
        ),
        ({"files": "resources/demo/seeds/web/*.csv"}, "sources.web.files: no file matches"),
    ],
)
def test_plan_stops_on_bad_source(monkeypatch, change, message):
    with pytest.raises(PlanError) as info:
        plan(demo_config(**change), monkeypatch)
    assert message in str(info.value)


def test_plan_stops_on_unknown_audience_and_on_choices_for_the_prompts_family(monkeypatch):
    config = demo_config()
    config["sources"]["outline"]["audiences"] = ["college", "toddlers"]
    with pytest.raises(PlanError, match="sources.outline.audiences: course_outline: unknown audi"):
        plan(config, monkeypatch)
    config = demo_config(family="prompts")
    with pytest.raises(PlanError, match="sources.web.styles: family prompts takes its prompts"):
        plan(config, monkeypatch)


def test_plan_stops_on_a_template_missing_its_placeholder(tmp_path, monkeypatch):
    with open(REPO / "resources" / "prompts" / "templates.yaml", encoding="utf-8") as f:
        templates = yaml.safe_load(f)
    templates["families"]["stories"]["entries"]["morality_story"]["template"] = "A moral story."
    broken = tmp_path / "templates.yaml"
    broken.write_text(yaml.safe_dump(templates), encoding="utf-8")
    config = demo_config()
    config["prompts"] = {"template_sets": {"project": str(broken)}}
    with pytest.raises(
        PlanError,
        match=r"sources.stories.styles: templates stories.morality_story: "
        r"missing placeholder\(s\) \['snippet'\]",
    ):
        plan(config, monkeypatch)


def test_hub_sources_plan_offline_one_shard_per_listed_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = demo_config()
    config["sources"]["math"] = {
        "family": "auto_math_text",
        "hub": {
            "repo_id": "math-ai/AutoMathText",
            "revision": "refs/convert/parquet",
            "data_files": ["data/web/0.50-0.60.jsonl", "data/web/0.60-0.70.jsonl"],
        },
    }
    shards = [s for s in plan(config, monkeypatch) if s.source == "math"]
    assert [(s.name, s.is_hub) for s in shards] == [("0_50-0_60", True), ("0_60-0_70", True)]
    assert hub.parse_ref(shards[0].path) == (
        "math-ai/AutoMathText", "refs/convert/parquet", "data/web/0.50-0.60.jsonl",
    )  # fmt: skip


def test_local_shard_names_must_be_wildcard_safe(tmp_path, monkeypatch):
    (tmp_path / "part.1.jsonl").write_text('{"text": "x"}\n')
    config = demo_config(files=str(tmp_path / "*.jsonl"))
    with pytest.raises(PlanError, match=r"shard name 'part.1'; shard names"):
        plan(config, monkeypatch)


# --- the same through Snakemake: the failing job leaves nothing, its log says why --------


@pytest.mark.e2e
def test_snakemake_bad_seed_row_fails_the_job_cleanly_then_quarantines(tmp_path):
    workdir = make_workdir(tmp_path / "w")
    seeds = workdir / "seeds"
    seeds.mkdir()
    write_lines(seeds / "bad.jsonl", [b'{"text": "fine"}', b'{"text": "broken', b'{"text": "ok"}'])
    config = {
        "dataset": {"name": "bad", "version": "v1"},
        "sources": {"web": {"family": "web_samples", "files": "seeds/*.jsonl"}},
    }
    # config/config.yaml is the Snakefile's default config file: replace it.
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    root = workdir / "results" / "bad" / "v1"
    target = "results/bad/v1/seeds/web/bad.parquet"

    proc = run_snakemake(workdir, "--cores", "1", target, check=False)
    assert proc.returncode != 0
    assert not (root / "seeds" / "web" / "bad.parquet").exists()
    assert list((root / "seeds" / "web").glob("*")) == [] if (root / "seeds").exists() else True
    log = (root / "logs" / "ingest" / "web" / "bad.log").read_text()
    assert "seeds/bad.jsonl:2: malformed JSON" in log

    config["sources"]["web"]["on_bad_rows"] = "quarantine"
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--cores", "1", target)
    seeds = root / "seeds" / "web" / "bad.parquet"
    assert pl.read_parquet(seeds).height == 2
    report = read_parquet_metadata(seeds)["ingest"]
    assert report["count"] == 1 and report["rows"][0]["line"] == 2
    assert (report["rows_read"], report["rows_kept"]) == (3, 2)
    # The CLI shows it: what a person runs to see the bad rows.
    shown = subprocess.run(
        [str(BIN / "cosmopedia"), "metadata", str(seeds)], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    assert json.loads(shown)[str(seeds)]["ingest"] == report


@pytest.mark.e2e
def test_cosmopedia_config_dry_run_plans_offline(tmp_path):
    workdir = make_workdir(tmp_path / "w")
    # The Snakefile's default config file would be merged in (--configfile extends it).
    (workdir / "config" / "config.yaml").write_text(
        (workdir / "config" / "cosmopedia.yaml").read_text()
    )
    proc = run_snakemake(
        workdir, "-n", "--quiet", "rules", "--configfile", "config/cosmopedia.yaml"
    )
    out = proc.stdout + proc.stderr
    ingest = next(line for line in out.splitlines() if line.split()[:1] == ["ingest"])
    assert int(ingest.split()[1]) == 296  # every listed Hub file of the nine sources
    assert not (workdir / "results").exists()

    # A placeholder left in the config is refused at planning, named, before any job.
    config = yaml.safe_load((workdir / "config" / "cosmopedia.yaml").read_text())
    config["sources"]["stanford"]["hub"]["revision"] = "PLACEHOLDER-commit-sha"
    config["generation"]["revision"] = "PLACEHOLDER"
    (workdir / "config" / "placeholders.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(
        workdir, "-n", "--configfile", str(workdir / "config" / "placeholders.yaml"), check=False
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "the config still holds 2 placeholder value(s)" in out
    assert "sources.stanford.hub.revision = 'PLACEHOLDER-commit-sha'" in out
    assert "generation.revision = 'PLACEHOLDER'" in out
    assert "cosmopedia lock" in proc.stdout + proc.stderr


# --- configs that can't lie: every case fails `snakemake -n`, before any job ---------------


DEMO_YAML = (REPO / "config" / "config.yaml").read_text(encoding="utf-8")


def dry_run_with(tmp_path, text: str):
    """`snakemake -n` of the real workflow with this config file (rc, output)."""
    workdir = make_workdir(tmp_path / "w")
    (workdir / "lie.yaml").write_text(text, encoding="utf-8")
    proc = run_snakemake(workdir, "-n", "--configfile", str(workdir / "lie.yaml"), check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # A source declared twice: YAML would keep the second one only.
        (
            lambda t: t.replace("  outline:\n", "  web:\n    family: wikihow\n  outline:\n"),
            "lie.yaml:24:3: duplicate key 'web' (first at line 14)",
        ),
        (
            lambda t: t + "  concurrency: 8.0\n".replace("  ", "  ", 1),
            "generation.concurrency: 8.0 is not of type 'integer'",
        ),
        (
            lambda t: t.replace("clean:\n  min_tokens: 150", "clean:\n  min_tokens: .nan"),
            "clean.min_tokens: nan is not of type 'integer'",
        ),
        (
            lambda t: t + "prompts:\n  topic_probability: .nan\n",
            "duplicate key 'prompts'",
        ),
        (
            lambda t: t + "minhash:\n  num_buckets: 2.0\n",
            "minhash.num_buckets: 2.0 is not of type 'integer'",
        ),
        (
            lambda t: t + "decontamination:\n  threshold: .nan\n",
            "duplicate key 'decontamination'",
        ),
    ],
    ids=["duplicate-source", "float-concurrency", "nan-min-tokens", "duplicate-section",
         "float-buckets", "duplicate-decontamination"],
)  # fmt: skip
def test_config_lies_fail_the_dry_run_naming_the_key(tmp_path, edit, message):
    text = edit(DEMO_YAML)
    if "concurrency: 8.0" in text:  # under generation:, not at the top level
        text = DEMO_YAML.replace("  concurrency: 32\n", "  concurrency: 8.0\n")
    code, output = dry_run_with(tmp_path, text)
    assert code != 0
    assert message in output
    assert "Job stats" not in output  # nothing was planned, let alone run


@pytest.mark.e2e
def test_nan_threshold_fails_before_any_job(tmp_path):
    text = DEMO_YAML.replace(
        "decontamination:\n", "decontamination:\n  threshold: .nan\n"
    )  # fmt: skip
    code, output = dry_run_with(tmp_path, text)
    assert code != 0 and "decontamination.threshold: nan is not of type 'number'" in output


def test_check_config_names_line_and_column_of_malformed_yaml(tmp_path):
    """Snakemake itself says only 'not valid JSON or YAML' for --configfile; check-config
    says where (README, troubleshooting)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO_YAML.replace("  version: v0.1\n", "  version: [v0.1\n"))
    proc = subprocess.run(
        [str(BIN / "cosmopedia"), "check-config", str(bad)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert re.search(rf"{bad}:\d+:\d+: ", proc.stderr), proc.stderr
    good = subprocess.run(
        [str(BIN / "cosmopedia"), "check-config", "config/config.yaml"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert good.returncode == 0 and "OK (6 shards in 3 sources)" in good.stdout
