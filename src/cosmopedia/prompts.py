"""Prompt builders: seed shard -> prompts shard, one builder per seed family.

Templates are data (resources/prompts/templates.yaml), one block per family and one entry
per style or audience. Every random choice (which style or audience, whether to name the
topic) uses an RNG seeded by (config seed, row id), so the prompts of a row never depend
on other rows, job order or hash randomisation. The `prompts` family has no templates: it
takes prompts as they are from a dataset column (e.g. Cosmopedia's own, to regenerate them).

This module is also imported at parse time (the plan checks every source's styles or
audiences against the templates before any job runs), so Polars is imported lazily.
"""

from __future__ import annotations

import logging
import string

from cosmopedia import settings as step_settings
from cosmopedia import templates as template_files
from cosmopedia.errors import CliError, PlanError
from cosmopedia.seeding import rng_for

log = logging.getLogger("cosmopedia.prompts")

# Placeholders each family's templates must use, and the ones they may use.
REQUIRED_PLACEHOLDERS = {
    "web_samples": {"extract"},
    "stories": {"snippet"},
    "course_outline": {"course", "section", "unit"},
    "wikihow": {"title"},
    "auto_math_text": {"extract"},
}
OPTIONAL_PLACEHOLDERS = {
    "web_samples": {"topic_sentence"},
    "stories": set(),
    "course_outline": {"covered_sentence"},
    "wikihow": set(),
    "auto_math_text": set(),
}
# Second template an entry may have, used for the rows that have a seed field, and the
# placeholders it must use on top of the family's: template key -> (seed field, placeholders).
VARIANTS = {
    "course_outline": {"template_with_reference": ("reference", {"reference"})},
}
# Which config list picks the template of a row (None: the family has no templates).
CHOICE_KEY = {
    "web_samples": "styles",
    "stories": "styles",
    "course_outline": "audiences",
    "wikihow": "styles",
    "auto_math_text": "styles",
    "prompts": None,
}
ENTRY_KEYS = ("format", "audience", "template")

PROMPT_COLUMNS = ["id", "source", "family", "prompt", "seed_data", "format", "audience"]


def family_templates(path: str, family: str) -> dict:
    """The family's block of the templates file ({} for a family without templates)."""
    if CHOICE_KEY.get(family, "") is None:
        return {}
    return template_files.load_family(path, family)


def _placeholders(family: str, name: str, key: str, text: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise CliError(f"templates {family}.{name}.{key}: malformed braces ({exc})") from exc


def check_templates(family: str, templates: dict, names: list[str]) -> None:
    """Fail before any row is built if a chosen template is missing or malformed."""
    required, optional = REQUIRED_PLACEHOLDERS[family], OPTIONAL_PLACEHOLDERS[family]
    variants = VARIANTS.get(family, {})
    for name in names:
        if name not in templates:
            known = ", ".join(sorted(templates))
            raise CliError(f"{family}: unknown {CHOICE_KEY[family][:-1]} {name!r} (known: {known})")
        entry = templates[name]
        if not isinstance(entry, dict):
            raise CliError(f"templates {family}.{name}: expected a mapping of {ENTRY_KEYS}")
        for key in ENTRY_KEYS:
            if not isinstance(entry.get(key), str):
                raise CliError(f"templates {family}.{name}: missing string field {key!r}")
        if unknown_keys := set(entry) - set(ENTRY_KEYS) - set(variants):
            raise CliError(f"templates {family}.{name}: unknown key(s) {sorted(unknown_keys)}")
        checks = [("template", required)]
        for key, (_, extra) in variants.items():
            if key in entry:
                if not isinstance(entry[key], str):
                    raise CliError(f"templates {family}.{name}: {key!r} must be a string")
                checks.append((key, required | extra))
        for key, must in checks:
            used = _placeholders(family, name, key, entry[key])
            label = f"templates {family}.{name}" + ("" if key == "template" else f".{key}")
            if missing := must - used:
                raise CliError(f"{label}: missing placeholder(s) {sorted(missing)}")
            if unknown := used - must - optional:
                raise CliError(f"{label}: unknown placeholder(s) {sorted(unknown)}")


def choice_settings(family: str, spec, templates: dict) -> dict:
    """The `styles` and `audiences` of a source (its config dict or its Prompts settings);
    the family's list defaults to every entry."""
    get = spec.get if isinstance(spec, dict) else lambda key: getattr(spec, key)
    settings = {"styles": get("styles"), "audiences": get("audiences")}
    key = CHOICE_KEY[family]
    if key is not None and not settings[key]:
        settings[key] = list(templates)
    return settings


def check_source(source: str, spec: dict, templates_path: str) -> None:
    """Parse-time check of one source's prompt settings against the templates file."""
    family = spec["family"]
    key = CHOICE_KEY[family]
    given = [k for k in ("styles", "audiences") if spec.get(k)]
    if key is None and given:
        raise CliError(
            f"sources.{source}.{given[0]}: family {family} takes its prompts as they are "
            "(no templates to choose from); remove the key"
        )
    if key is None:
        return
    if wrong := [k for k in given if k != key]:
        raise CliError(f"sources.{source}.{wrong[0]}: family {family} picks {key}, not {wrong[0]}")
    try:
        templates = family_templates(templates_path, family)
    except OSError as exc:
        raise CliError(f"prompts.templates: cannot read {templates_path!r}: {exc}") from exc
    except PlanError as exc:
        raise CliError(str(exc)) from exc
    names = choice_settings(family, spec, templates)[key]
    if not names:
        raise CliError(f"prompt templates {templates_path!r}: block {family} has no entries")
    try:
        check_templates(family, templates, names)
    except CliError as exc:
        raise CliError(f"sources.{source}.{key}: {exc}") from None


# --- builders: (row, rng, settings) -> (placeholder values, seed_data) --------------


def _web_fields(row: dict, rng, settings: step_settings.Prompts) -> tuple[dict, str]:
    extract = row["text"][: settings.extract_max_chars]
    topic_sentence = ""
    # Draw unconditionally: a row's choices don't shift when its topic is missing.
    if rng.random() < settings.topic_probability and row.get("topic"):
        topic_sentence = f"The following extract is related to {row['topic']}.\n"
    return {"extract": extract, "topic_sentence": topic_sentence}, extract


def _story_fields(row: dict, rng, settings: step_settings.Prompts) -> tuple[dict, str]:
    return {"snippet": row["text"]}, row["text"]


def _outline_fields(row: dict, rng, settings: step_settings.Prompts) -> tuple[dict, str]:
    covered = row.get("covered") or []
    if covered:
        covered_sentence = (
            "The units already covered in this section are: " + "; ".join(covered) + "."
        )
    else:
        covered_sentence = "This is the first unit of the section."
    chapter, section = row.get("chapter"), row.get("section")
    if chapter and section:
        covered_sentence = f"The section is part of the chapter {chapter}. {covered_sentence}"
    trail_parts = (row["course"], chapter, section, row["unit"])
    trail = " > ".join(part for part in trail_parts if part)
    fields = {
        "course": row["course"],
        "section": section or chapter or "(no section)",
        "unit": row["unit"],
        "covered_sentence": covered_sentence,
    }
    if row.get("reference"):
        fields["reference"] = row["reference"][: settings.extract_max_chars]
    return fields, trail


def _wikihow_fields(row: dict, rng, settings: step_settings.Prompts) -> tuple[dict, str]:
    return {"title": row["title"]}, row["title"]


def _math_fields(row: dict, rng, settings: step_settings.Prompts) -> tuple[dict, str]:
    extract = row["text"][: settings.extract_max_chars]
    return {"extract": extract}, extract


FIELD_BUILDERS = {
    "web_samples": _web_fields,
    "stories": _story_fields,
    "course_outline": _outline_fields,
    "wikihow": _wikihow_fields,
    "auto_math_text": _math_fields,
}


def _template_text(family: str, name: str, entry: dict, fields: dict, row_id: str) -> str:
    for key, (field, _) in VARIANTS.get(family, {}).items():
        if fields.get(field):
            if key not in entry:
                raise CliError(
                    f"templates {family}.{name}: no {key!r}, but row {row_id!r} has {field} text"
                )
            return entry[key]
    return entry["template"]


def build_prompts(seeds, templates: dict, settings: step_settings.Prompts):
    """Prompts shard (Polars DataFrame, PROMPT_COLUMNS) of a seed shard."""
    import polars as pl

    family = settings.family
    schema = {c: pl.String for c in PROMPT_COLUMNS}
    if CHOICE_KEY[family] is None:
        return _taken_prompts(seeds, settings, schema)
    names = choice_settings(family, settings, templates)[CHOICE_KEY[family]]
    check_templates(family, templates, names)
    rows = []
    for row in seeds.iter_rows(named=True):
        rng = rng_for(settings.seed, "prompt", row["id"])
        name = names[rng.randrange(len(names))]
        fields, seed_data = FIELD_BUILDERS[family](row, rng, settings)
        entry = templates[name]
        rows.append(
            {
                "id": row["id"],
                "source": settings.source,
                "family": family,
                "prompt": _template_text(family, name, entry, fields, row["id"]).format(**fields),
                "seed_data": seed_data,
                "format": entry["format"],
                "audience": entry["audience"],
            }
        )
    return pl.DataFrame(rows, schema=schema, orient="row")


def _taken_prompts(seeds, settings: step_settings.Prompts, schema: dict):
    """`prompts` family: each row's prompt as it is, with its seed_data/format/audience."""
    import polars as pl

    rows = [
        {
            "id": row["id"],
            "source": settings.source,
            "family": settings.family,
            "prompt": row["prompt"],
            "seed_data": row.get("seed_data"),
            "format": row.get("format"),
            "audience": row.get("audience"),
        }
        for row in seeds.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema=schema, orient="row")


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
    from cosmopedia.io import read_parquet, write_parquet

    settings = step_settings.load(step_settings.Prompts, args.settings)
    if settings.family not in CHOICE_KEY:
        raise CliError(f"unknown seed family {settings.family!r}")
    try:
        templates = family_templates(settings.templates, settings.family)
    except (OSError, PlanError) as exc:
        raise CliError(str(exc)) from exc
    prompts = build_prompts(read_parquet(args.input), templates, settings)
    write_parquet(prompts, args.output)
    log.info("built %d prompts into %s", prompts.height, args.output)
    return 0
