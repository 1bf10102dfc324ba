"""Prompt builders: seed shard -> prompts shard, one builder per seed family.

Templates are data (resources/prompts/templates.yaml). Every random choice (which style or
audience, whether to name the topic) uses an RNG seeded by (config seed, row id), so the
prompts of a row never depend on other rows, job order or hash randomisation.
"""

from __future__ import annotations

import logging
import string

import polars as pl

from cosmopedia.cli import CliError, load_settings
from cosmopedia.io import read_parquet, write_parquet
from cosmopedia.plan import PlanError, load_family_templates
from cosmopedia.seeding import rng_for

log = logging.getLogger("cosmopedia.prompts")

# Placeholders each family's templates must use, and the one that may be used.
REQUIRED_PLACEHOLDERS = {
    "web_samples": {"extract"},
    "stories": {"snippet"},
    "course_outline": {"course", "section", "unit"},
}
OPTIONAL_PLACEHOLDERS = {
    "web_samples": {"topic_sentence"},
    "stories": set(),
    "course_outline": {"covered_sentence"},
}
# Which config list picks the template of a row.
CHOICE_KEY = {"web_samples": "styles", "stories": "styles", "course_outline": "audiences"}

PROMPT_COLUMNS = ["id", "source", "family", "prompt", "seed_data", "format", "audience"]


def check_templates(family: str, templates: dict, names: list[str]) -> None:
    """Fail before any row is built if a chosen template is missing or malformed."""
    required, optional = REQUIRED_PLACEHOLDERS[family], OPTIONAL_PLACEHOLDERS[family]
    for name in names:
        if name not in templates:
            known = ", ".join(sorted(templates))
            raise CliError(f"{family}: unknown {CHOICE_KEY[family][:-1]} {name!r} (known: {known})")
        entry = templates[name]
        for key in ("format", "audience", "template"):
            if not isinstance(entry.get(key), str):
                raise CliError(f"templates {family}.{name}: missing string field {key!r}")
        used = {f for _, f, _, _ in string.Formatter().parse(entry["template"]) if f is not None}
        if missing := required - used:
            raise CliError(f"templates {family}.{name}: missing placeholder(s) {sorted(missing)}")
        if unknown := used - required - optional:
            raise CliError(f"templates {family}.{name}: unknown placeholder(s) {sorted(unknown)}")


def _web_fields(row: dict, rng, settings: dict) -> tuple[dict, str]:
    extract = row["text"][: settings["extract_max_chars"]]
    topic_sentence = ""
    # Draw unconditionally: a row's choices don't shift when its topic is missing.
    if rng.random() < settings["topic_probability"] and row.get("topic"):
        topic_sentence = f"The following extract is related to {row['topic']}.\n"
    return {"extract": extract, "topic_sentence": topic_sentence}, extract


def _story_fields(row: dict, rng, settings: dict) -> tuple[dict, str]:
    return {"snippet": row["text"]}, row["text"]


def _outline_fields(row: dict, rng, settings: dict) -> tuple[dict, str]:
    covered = row.get("covered") or []
    if covered:
        covered_sentence = (
            "The units already covered in this section are: " + "; ".join(covered) + "."
        )
    else:
        covered_sentence = "This is the first unit of the section."
    section = row.get("section") or "(no section)"
    trail = " > ".join(part for part in (row["course"], row.get("section"), row["unit"]) if part)
    fields = {
        "course": row["course"],
        "section": section,
        "unit": row["unit"],
        "covered_sentence": covered_sentence,
    }
    return fields, trail


FIELD_BUILDERS = {
    "web_samples": _web_fields,
    "stories": _story_fields,
    "course_outline": _outline_fields,
}


def build_prompts(seeds: pl.DataFrame, templates: dict, settings: dict) -> pl.DataFrame:
    family = settings["family"]
    names = settings.get(CHOICE_KEY[family])
    if not names:
        raise CliError(f"sources.{settings['source']}.{CHOICE_KEY[family]} is empty or missing")
    check_templates(family, templates, names)
    rows = []
    for row in seeds.iter_rows(named=True):
        rng = rng_for(settings["seed"], "prompt", row["id"])
        name = names[rng.randrange(len(names))]
        fields, seed_data = FIELD_BUILDERS[family](row, rng, settings)
        entry = templates[name]
        rows.append(
            {
                "id": row["id"],
                "source": settings["source"],
                "family": family,
                "prompt": entry["template"].format(**fields),
                "seed_data": seed_data,
                "format": entry["format"],
                "audience": entry["audience"],
            }
        )
    return pl.DataFrame(rows, schema={c: pl.String for c in PROMPT_COLUMNS}, orient="row")


def add_arguments(name, parser):
    parser.add_argument("--input", required=True, help="seed shard (.parquet)")
    parser.add_argument("--output", required=True, help="prompts shard (.parquet)")
    parser.add_argument(
        "--settings",
        required=True,
        help="JSON (or @file): source, family, seed, styles|audiences, templates, "
        "extract_max_chars, topic_probability",
    )


def main(args) -> int:
    settings = load_settings(args.settings)
    try:
        templates = load_family_templates(settings["templates"], settings["family"])
    except (OSError, PlanError) as exc:
        raise CliError(str(exc)) from exc
    prompts = build_prompts(read_parquet(args.input), templates, settings)
    write_parquet(prompts, args.output)
    log.info("built %d prompts into %s", prompts.height, args.output)
    return 0
