"""The settings layer: one schema, typed dataclasses that mirror it, and one way in."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from cosmopedia import plan, settings
from cosmopedia.errors import CliError

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "cosmopedia"


def demo_config() -> dict:
    with open(REPO / "config" / "config.yaml", encoding="utf-8") as f:
        return settings.validate_config(yaml.safe_load(f))


@pytest.mark.parametrize("cls", settings.SECTIONS, ids=lambda c: c.__name__)
def test_each_section_mirrors_its_part_of_the_schema(cls):
    node = settings.subschema(cls.SCHEMA_PATH)
    fields = [f.name for f in dataclasses.fields(cls)]
    assert sorted(fields) == sorted(settings.job_keys(node))


def test_every_schema_object_that_jobs_receive_has_a_section():
    """A new key under generation/clean/minhash/decontamination needs its typed field."""
    covered = {cls.SCHEMA_PATH for cls in settings.SECTIONS}
    for top in ("generation", "clean", "minhash", "decontamination"):
        stack = [(top,)]
        while stack:
            path = stack.pop()
            assert path in covered, f"{'.'.join(path)} has no settings dataclass"
            node = settings.subschema(path)
            for key, sub in node.get("properties", {}).items():
                if sub.get("type") == "object" and "properties" in sub:
                    stack.append((*path, key))


def test_no_hand_written_setting_key_tables_outside_the_schema():
    """The keys of a settings object are named once: in the schema (and its dataclass)."""
    leaf_keys = set()

    def collect(node):
        for key, sub in node.get("properties", {}).items():
            leaf_keys.add(key)
            collect(sub)

    collect(settings.schema()["properties"]["generation"])
    collect(settings.schema()["properties"]["minhash"])
    collect(settings.schema()["properties"]["decontamination"])
    for path in SRC.rglob("*.py"):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                # A list made only of setting keys (4 or more) is a key table.
                table = len(names) >= 4 and names <= leaf_keys
                assert not table, f"{path.name}:{node.lineno} lists setting keys {names}"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"concurrency": 8.0}, "generation.concurrency: 8.0 is not of type 'integer'"),
        ({"concurrency": True}, "generation.concurrency: True is not of type 'integer'"),
        ({"startup_timeout_s": math.nan}, "generation.startup_timeout_s: nan is not of type"),
        ({"request_timeout_s": math.inf}, "generation.request_timeout_s: inf is not of type"),
        ({"sampling": {"top_k": 50.5}}, "generation.sampling.top_k: 50.5 is not of type"),
        ({"temprature": 0.6}, "Additional properties are not allowed ('temprature'"),
    ],
)
def test_the_schema_refuses_what_json_schema_alone_lets_through(bad, message):
    config = demo_config()
    config["generation"] |= bad
    with pytest.raises(CliError, match=message.replace("(", r"\(").replace(".", r"\.")):
        settings.validate_config(config)


def test_sections_get_their_defaults_and_check_types():
    minhash = settings.from_dict(settings.Minhash, {"n_grams": 4}, "minhash")
    assert minhash.n_grams == 4 and minhash.num_buckets == 14
    with pytest.raises(CliError, match="minhash.n_grams: 0 is less than the minimum"):
        settings.from_dict(settings.Minhash, {"n_grams": 0}, "minhash")
    with pytest.raises(dataclasses.FrozenInstanceError):
        minhash.n_grams = 5  # type: ignore[misc]


def test_job_settings_round_trip_through_the_cli_json():
    config = demo_config()
    job = plan.generate_job(config)
    text = settings.canonical_json(job)
    assert settings.load(settings.Generate, text) == job
    assert job.generation.sampling.top_k == 50
    assert job.generation.server.mounts == ()
    with pytest.raises(CliError, match="--settings.generation.sampling.top_k"):
        data = json.loads(text)
        data["generation"]["sampling"]["top_k"] = "fifty"
        settings.load(settings.Generate, json.dumps(data))
    with pytest.raises(CliError, match="not valid JSON"):
        settings.load(settings.Generate, "{")


def test_operational_keys_do_not_reach_the_compared_request():
    config = demo_config()
    request = plan.generate_request(config)
    operational = {"concurrency", "request_timeout_s", "max_retries", "instances", "dummy"}
    assert not operational & set(request)
    assert {"model", "revision", "sampling", "engine"} <= set(request)
    assert "stop_grace_s" not in request["server"] and "max_total_tokens" in request["server"]
    changed = demo_config()
    changed["generation"]["concurrency"] = 3
    changed["generation"]["server"]["stop_grace_s"] = 1
    assert plan.generate_request(changed) == request
    changed["generation"]["sampling"]["temperature"] = 0.7
    assert plan.generate_request(changed) != request


def test_settings_of_planned_jobs_keep_their_text():
    """The JSON of each step's settings is what Snakemake compares: it must not change for
    a change of representation (it would rerun every job of a running version)."""
    config = demo_config()
    shard = plan.plan_shards(config)[0]
    ingest = plan.shard_ingest_job(plan.ingest_job(config, shard.source), shard, "ab" * 32)
    assert json.loads(settings.canonical_json(ingest)) == {
        "source": "outline",
        "family": "course_outline",
        "columns": {"course": "course", "covered": "covered", "section": "section",
                    "unit": "unit"},
        "id_column": None,
        "on_bad_rows": "fail",
        "max_chars": 1000000,
        "seed": "resources/demo/seeds/outline/outline-00000.jsonl",
        "seed_sha256": "ab" * 32,
    }  # fmt: skip
    clean = settings.canonical_json(plan.section(settings.Clean, config))
    planning_only = ("preset", "tokenizer")
    assert json.loads(clean) == {k: v for k, v in config["clean"].items() if k not in planning_only}


def test_snakemake_still_reads_the_cached_signature():
    """cosmopedia.snakemake_compat relies on an undocumented Snakemake function; if this
    fails after a Snakemake upgrade, make cache_signature a no-op (planning gets slower)."""
    from snakemake.common import get_function_params

    from cosmopedia.snakemake_compat import cache_signature

    def param(wildcards, output):
        return None

    cached = cache_signature(param).__dict__
    assert get_function_params(param) is next(iter(cached.values()))
    assert list(get_function_params(param)) == ["wildcards", "output"]
