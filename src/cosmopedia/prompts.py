"""Prompt builders: seed shard -> prompts shard, one builder per seed family.

Templates are data (cosmopedia.templates): a source uses one family block (a variant) of a
template set. Two sets ship: `project` (resources/prompts/templates.yaml, str.format
placeholders, this project's texts) and `cosmopedia-v0.1` (resources/prompts/
cosmopedia-v0.1.yaml: the original builders' texts with their markers, which the
builders below replace exactly as huggingface/cosmopedia @ 38789ca does).

Fan-out (sources.<name>.fan_out):
  one   one style (or audience) per seed unit, drawn from the source's list (the project's
        mode). Ids are the seed ids. The unit's RNG, seeded by (config seed, "prompt",
        unit id), draws the style, then whatever the builder draws (topic coin, ...).
  all   every style of the list per seed unit, in the template set's order (the original's
        --run_all_styles). Ids are `<unit id>/<style>`. Each (unit, style) has its own RNG,
        seeded by (config seed, "prompt", unit id, style).
A seed unit is a seed row, except for openstax where one seed row is a book and each unit
the builder finds in it is a unit (`<book id>/<k>`, k its position in the book).

Every random choice uses these RNGs: the prompts of a row never depend on other rows, job
order or hash randomisation. The original draws from unseeded global RNGs (Python's random
in forked workers, numpy's legacy global state): its choices can't be reproduced, only
their distribution (same probability, same sizes, with replacement). `Draws` is the one
place where they are made, so tests replay the original's recorded draws through it.

Output columns: id, source, family, prompt, seed_data (the source's label, e.g.
auto_math_text), format, audience (the entry's labels) and seed_text (the seed material
the prompt was built from: the extract, the snippet, the outline trail, the title).

The `prompts` family has no templates: it takes prompts as they are from a dataset column
(e.g. Cosmopedia's own, to regenerate them), with their seed_data/format/audience.

This module is also imported at parse time (the plan checks every source's template set,
variant and styles before any job runs), so Polars is imported lazily.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field

from cosmopedia import settings as step_settings
from cosmopedia import templates as template_files
from cosmopedia.errors import CliError, PlanError
from cosmopedia.seeding import rng_for

log = logging.getLogger("cosmopedia.prompts")

# Placeholders each family's templates must use, and the ones they may use (syntax: format).
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
    "openstax": "audiences",
    "prompts": None,
}
ENTRY_KEYS = ("format", "audience", "template")
# syntax: markers -- the original's builders (a variant's `builder`): the families each
# serves and the texts of its entries (the rest of an entry: labels and provenance).
MARKER_BUILDERS = {
    "web_extract": (("web_samples",), ("template",)),
    "snippet": (("stories", "auto_math_text"), ("template",)),
    "openstax_book": (("openstax",), ("beginning", "criteria")),
}
MARKER_ENTRY_INFO = {"format", "audience", "labels", "sha256", "quirks", "original_key"}

PROMPT_COLUMNS = [
    "id", "source", "family", "prompt", "seed_data", "format", "audience", "seed_text"
]  # fmt: skip


def template_set_path(config: dict, spec: dict) -> tuple[str, str]:
    """(name, file) of the template set a source uses."""
    name = spec.get("template_set") or config["prompts"]["template_set"]
    sets = config["prompts"]["template_sets"]
    if name not in sets:
        raise CliError(
            f"template set {name!r} is not in prompts.template_sets (known: {', '.join(sets)})"
        )
    return name, sets[name]


def source_block(config: dict, source: str) -> template_files.Block | None:
    """The templates a source uses (None for the `prompts` family)."""
    spec = config["sources"][source]
    if CHOICE_KEY[spec["family"]] is None:
        return None
    name, path = template_set_path(config, spec)
    try:
        block = template_files.load_block(path, spec["family"], spec.get("variant"))
    except OSError as exc:
        raise CliError(f"prompts.template_sets.{name}: cannot read {path!r}: {exc}") from exc
    except PlanError as exc:
        raise CliError(str(exc)) from None
    if block.set != name:
        raise CliError(f"prompts.template_sets.{name}: {path!r} holds the set {block.set!r}")
    return block


def family_templates(path: str, family: str, variant: str | None = None) -> dict:
    """The family's entries in the set at `path` ({} for a family without templates)."""
    if CHOICE_KEY.get(family, "") is None:
        return {}
    return template_files.load_family(path, family, variant)


def as_block(templates, family: str) -> template_files.Block:
    """A Block, or a plain entries mapping taken as a `project`-syntax block."""
    if isinstance(templates, template_files.Block):
        return templates
    return template_files.Block("project", "format", "stripped", family, "default", {}, templates)


def choice_names(block: template_files.Block) -> list[str]:
    """The styles (or audiences) of a block, in the order a fan-out builds them."""
    if block.options.get("builder") == "openstax_book":
        refs = block.options["references"]
        return [f"{name}_{ref}" for ref in refs for name in block.entries]
    return list(block.entries)


def _entry_of(block: template_files.Block, name: str) -> tuple[dict, dict]:
    """(entry, extra) of a choice name: openstax names are <entry>_<with_ref|no_ref>."""
    if block.options.get("builder") == "openstax_book":
        for ref in block.options["references"]:
            base = name[: -len(ref) - 1]
            if name.endswith(f"_{ref}") and base in block.entries:
                return block.entries[base], {"reference": ref == "with_ref"}
        raise KeyError(name)
    return block.entries[name], {}


def _placeholders(family: str, name: str, key: str, text: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise CliError(f"templates {family}.{name}.{key}: malformed braces ({exc})") from exc


def check_templates(family: str, templates, names: list[str]) -> None:
    """Fail before any row is built if a chosen template is missing or malformed."""
    block = as_block(templates, family)
    what = CHOICE_KEY[family][:-1]
    known = choice_names(block)
    for name in names:
        if name not in known:
            raise CliError(f"{family}: unknown {what} {name!r} (known: {', '.join(known)})")
    if block.syntax == "markers":
        _check_marker_block(block, names)
    else:
        _check_format_block(family, block.entries, names)


def _check_format_block(family: str, templates: dict, names: list[str]) -> None:
    if family not in REQUIRED_PLACEHOLDERS:
        raise CliError(f"template syntax `format` has no builder for family {family}")
    required, optional = REQUIRED_PLACEHOLDERS[family], OPTIONAL_PLACEHOLDERS[family]
    variants = VARIANTS.get(family, {})
    for name in names:
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


def _check_marker_block(block: template_files.Block, names: list[str]) -> None:
    where = f"templates {block.set}: {block.family}.{block.variant}"
    builder = block.options.get("builder")
    families, texts = MARKER_BUILDERS.get(builder, ((), ()))
    if block.family not in families:
        raise CliError(f"{where}: builder {builder!r} does not build family {block.family}")
    markers = block.options.get("markers")
    if not isinstance(markers, list) or not all(
        isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m) for m in markers
    ):
        raise CliError(f"{where}: `markers` must be a list of [marker, field] pairs")
    for name in names:
        entry, _ = _entry_of(block, name)
        label = f"{where}.{name}"
        if unknown := set(entry) - set(texts) - MARKER_ENTRY_INFO:
            raise CliError(f"{label}: unknown key(s) {sorted(unknown)}")
        for key in texts:
            if not isinstance(entry.get(key), str):
                raise CliError(f"{label}: missing string field {key!r}")
        if not isinstance(entry.get("format"), str):
            raise CliError(f"{label}: missing string field 'format'")
        # Every marker must appear in the text it belongs to (the first text).
        if missing := [m for m, _ in markers if m not in entry[texts[0]]]:
            raise CliError(f"{label}.{texts[0]}: missing marker(s) {missing}")


def choice_settings(family: str, spec, templates) -> dict:
    """The `styles` and `audiences` of a source (its config dict or its Prompts settings);
    the family's list defaults to every entry of its block."""
    get = spec.get if isinstance(spec, dict) else lambda key: getattr(spec, key)
    settings = {"styles": get("styles"), "audiences": get("audiences")}
    key = CHOICE_KEY[family]
    if key is not None and not settings[key]:
        settings[key] = choice_names(as_block(templates, family))
    return settings


def check_source(source: str, spec: dict, config: dict) -> None:
    """Parse-time check of one source's prompt settings against its template set."""
    family = spec["family"]
    key = CHOICE_KEY[family]
    given = [k for k in ("styles", "audiences") if spec.get(k)]
    if key is None:
        for name in (*given, "template_set", "variant"):
            if spec.get(name):
                raise CliError(
                    f"sources.{source}.{name}: family {family} takes its prompts as they are "
                    "(no templates to choose from); remove the key"
                )
        if spec.get("fan_out", "one") != "one":
            raise CliError(f"sources.{source}.fan_out: family {family} has nothing to fan out")
        return
    if wrong := [k for k in given if k != key]:
        raise CliError(f"sources.{source}.{wrong[0]}: family {family} picks {key}, not {wrong[0]}")
    try:
        block = source_block(config, source)
    except CliError as exc:
        raise CliError(f"sources.{source}: {exc}") from None
    names = choice_settings(family, spec, block)[key]
    if not names:
        raise CliError(f"templates {block.set}: block {family} has no entries")
    try:
        check_templates(family, block, names)
    except CliError as exc:
        raise CliError(f"sources.{source}.{key}: {exc}") from None


# --- random draws ----------------------------------------------------------------------------


class Draws:
    """Every random choice a builder makes, from the RNG it is given.

    `key` names the draw ((unit id, style)); tests subclass this to replay recorded draws.
    """

    def topic(self, rng, key: tuple[str, str]) -> float:
        """Web samples: the coin of the topic sentence (named when below the probability)."""
        return rng.random()

    def covered(self, rng, titles: list[str], sizes: list[int], key: tuple[str, str]):
        """OpenStax: the covered units listed when there are too many: randint(*sizes) of
        them, uniformly with replacement, in draw order (as np.random.choice does)."""
        k = rng.randint(*sizes)
        return [titles[rng.randrange(len(titles))] for _ in range(k)]


# --- builders of syntax `format` (the project set): row -> (placeholder values, seed text) ---


def _web_fields(row: dict, rng, settings: step_settings.Prompts, key) -> tuple[dict, str]:
    extract = row["text"][: settings.extract_max_chars]
    topic_sentence = ""
    # Draw unconditionally: a row's choices don't shift when its topic is missing.
    if rng.random() < settings.topic_probability and row.get("topic"):
        topic_sentence = f"The following extract is related to {row['topic']}.\n"
    return {"extract": extract, "topic_sentence": topic_sentence}, extract


def _story_fields(row: dict, rng, settings: step_settings.Prompts, key) -> tuple[dict, str]:
    return {"snippet": row["text"]}, row["text"]


def _outline_fields(row: dict, rng, settings: step_settings.Prompts, key) -> tuple[dict, str]:
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


def _wikihow_fields(row: dict, rng, settings: step_settings.Prompts, key) -> tuple[dict, str]:
    return {"title": row["title"]}, row["title"]


def _math_fields(row: dict, rng, settings: step_settings.Prompts, key) -> tuple[dict, str]:
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
    for key, (field_name, _) in VARIANTS.get(family, {}).items():
        if fields.get(field_name):
            if key not in entry:
                raise CliError(
                    f"templates {family}.{name}: no {key!r}, but row {row_id!r} has "
                    f"{field_name} text"
                )
            return entry[key]
    return entry["template"]


@dataclass
class Unit:
    """One seed unit: the prompts of one style are built from it."""

    id: str
    row: dict
    book: OpenstaxBook | None = None
    index: int = 0  # openstax: the unit's position in the book


def _format_prompt(unit: Unit, name: str, rng, block, settings, draws) -> tuple[str, str]:
    family = settings.family
    fields, seed_text = FIELD_BUILDERS[family](unit.row, rng, settings, (unit.id, name))
    entry = block.entries[name]
    return _template_text(family, name, entry, fields, unit.id).format(**fields), seed_text


# --- builders of syntax `markers` (the cosmopedia-v0.1 set): the original's rules ----------


def _replace(text: str, markers: list, fields: dict) -> str:
    """The original's str.replace calls, in its order (no escaping, no re-parsing)."""
    for marker, field_name in markers:
        text = text.replace(marker, fields[field_name])
    return text


def _web_extract_prompt(unit: Unit, name: str, rng, block, settings, draws) -> tuple[str, str]:
    """build_web_prompts.py: extract = examples[:1000] (not stripped); `, within the context
    of "<category>"` with probability 0.5, one draw per row and style."""
    opts = block.options
    extract = unit.row["text"][: opts["extract_chars"]]
    if opts["strip"]:
        extract = extract.strip()
    topic_sentence = ""
    if draws.topic(rng, (unit.id, name)) < opts["topic_probability"]:
        # The original's f-string: a missing category gives "None", as it would there.
        topic_sentence = opts["topic_sentence"].format(topic=unit.row.get("topic"))
    fields = {"extract": extract, "topic_sentence": topic_sentence}
    return _replace(block.entries[name]["template"], opts["markers"], fields), extract


def _snippet_prompt(unit: Unit, name: str, rng, block, settings, draws) -> tuple[str, str]:
    """build_*_stories_prompts.py, build_science_prompts.py: x[col].strip()[:1000]
    (stripped first, cut after, not stripped again)."""
    opts = block.options
    snippet = unit.row["text"]
    if opts["strip"]:
        snippet = snippet.strip()
    snippet = snippet[: opts["extract_chars"]]
    return _replace(block.entries[name]["template"], opts["markers"], {"snippet": snippet}), snippet


# OpenStax (build_openstax_prompts.py). A book: {book_title, language, chapters: [L0]}, an L0
# chapter {title, chapters: [L1]} (its own sections and abstract are not used), an L1
# {title, sections | chapters: [L2]}, an L2 {title, sections | abstract}. Units:
#   section        an L1 with sections: one unit per section; the "covered" sentences
#                  accumulate (unit i repeats those of units 1..i-1 of the L1, with their
#                  samples, as the original's `subchapter_prompt +=` does)
#   part_section   an L1 without sections: one unit per section of each L2 that has some;
#                  one covered sentence
#   abstract       an L1 without sections: one unit per L2 without sections, with an
#                  abstract and without "introduction" in its title; covered = the titles
#                  of the L2 entries before it (skipped ones included); unquoted title, and
#                  the whole text is rstrip('.').rstrip() + '.'
# Deeper levels are not used; chapters whose title holds "preface" are skipped; only books
# whose language is exactly "en" give prompts.


@dataclass
class OpenstaxUnit:
    kind: str  # section | part_section | abstract
    chapter: str
    section: str | None  # the L1 (section) or L2 (part_section) title; None for abstract
    part: str | None  # the L1 title of part_section and abstract units
    title: str
    text: str | None  # the section's paragraph, or the L2's abstract
    covered: list[str]  # titles before this unit
    group: list[int] = field(default_factory=list)  # section: units 1..i of the same L1


@dataclass
class OpenstaxBook:
    title: str
    units: list[OpenstaxUnit]
    covered_cache: dict = field(default_factory=dict)


def _chapters(value, where: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise CliError(f"{where}: expected a list of chapters")
    return value


def _title(node: dict, where: str) -> str:
    title = node.get("title")
    if not isinstance(title, str):
        raise CliError(f"{where}: a chapter or section without a title")
    return title


def parse_openstax_book(row: dict, opts: dict, where: str) -> OpenstaxBook:
    """The units of a book, in the original's order (empty for another language)."""
    chapters = json.loads(row["chapters"]) if isinstance(row["chapters"], str) else row["chapters"]
    book = OpenstaxBook(row["book_title"], [])
    if row.get("language") != opts["language"]:
        return book
    skip_chapter, skip_unit = opts["skip_chapters_containing"], opts["skip_units_containing"]
    for top in _chapters(chapters, where):
        chapter = _title(top, where)
        if skip_chapter in chapter.lower():
            continue
        for sub in _chapters(top.get("chapters"), where):
            part = _title(sub, where)
            sections = sub.get("sections")
            if sections:
                titles = [_title(s, where) for s in sections]
                group: list[int] = []
                for i, section in enumerate(sections):
                    unit = OpenstaxUnit(
                        "section", chapter, part, None, titles[i], section.get("paragraph"),
                        titles[:i],
                    )  # fmt: skip
                    if i:
                        group.append(len(book.units))
                    unit.group = list(group)
                    book.units.append(unit)
                continue
            entries = _chapters(sub.get("chapters"), where)
            names = [_title(e, where) for e in entries]
            for k, entry in enumerate(entries):
                if entry.get("sections"):
                    titles = [_title(s, where) for s in entry["sections"]]
                    for i, section in enumerate(entry["sections"]):
                        book.units.append(
                            OpenstaxUnit(
                                "part_section",
                                chapter,
                                names[k],
                                part,
                                titles[i],
                                section.get("paragraph"),
                                titles[:i],
                            )  # fmt: skip
                        )
                elif skip_unit not in names[k].lower() and entry.get("abstract"):
                    book.units.append(
                        OpenstaxUnit(
                            "abstract",
                            chapter,
                            None,
                            part,
                            names[k],
                            entry["abstract"],
                            names[:k],
                        )  # fmt: skip
                    )
    return book


def _openstax_trail(book: OpenstaxBook, unit: OpenstaxUnit) -> str:
    parts = [book.title, unit.chapter]
    if unit.kind == "section":
        parts.append(unit.section)
    elif unit.kind == "part_section":
        parts += [unit.part, unit.section]
    else:
        parts.append(unit.part)
    return " > ".join([*parts, unit.title])


def _covered_sentence(book_unit: Unit, index: int, name: str, block, settings, draws) -> str:
    """The "We have already covered..." sentence of unit `index` of the book, for `name`."""
    book = book_unit.book
    cache_key = (index, name)
    if cache_key in book.covered_cache:
        return book.covered_cache[cache_key]
    opts, pieces = block.options, block.options["pieces"]
    unit = book.units[index]
    titles = unit.covered
    if len(titles) > opts["sample_above"]:
        unit_id = f"{book_unit.row['id']}/{index:05d}"
        # The same draw wherever the sentence appears (later units of a section repeat it).
        rng = rng_for(settings.seed, "prompt", unit_id, name)
        titles = draws.covered(rng, titles, opts["sample_sizes"], (unit_id, name))
    listed = pieces["covered_item_separator"].join(
        pieces["covered_item"].format(name=t) for t in titles
    )
    where = "covered_in_chapter" if unit.kind == "abstract" else "covered_in_section"
    position = len(unit.covered)  # the unit's index among its siblings
    sentence = pieces[where].format(plural="s" if position > 1 else "", covered_list=listed)
    book.covered_cache[cache_key] = sentence
    return sentence


def _openstax_prompt(unit: Unit, name: str, rng, block, settings, draws) -> tuple[str, str]:
    opts, pieces = block.options, block.options["pieces"]
    entry, extra = _entry_of(block, name)
    book, ou = unit.book, unit.book.units[unit.index]
    quoted = pieces["book_title_quoted"].format(book_title=book.title)
    beginning = _replace(entry["beginning"], opts["markers"], {"book_title_quoted": quoted})
    text = beginning + pieces["chapter_intro"].format(chapter_title=ou.chapter)
    end = pieces["end_prompt"].format(criteria=entry["criteria"])
    size = opts["reference_chars"]

    def sentence(index: int) -> str:
        return _covered_sentence(unit, index, name, block, settings, draws)

    if ou.kind == "abstract":
        if ou.covered:
            text += sentence(unit.index)
        text += pieces["unit_unquoted"].format(unit_title=ou.title)
        if extra["reference"]:
            text += pieces["inspiration"].format(text=ou.text[:size])
        prompt = text.rstrip(".").rstrip() + ".\n" + end
    else:
        if ou.kind == "section":
            text += pieces["section_intro"].format(section_title=ou.section)
            text += "".join(sentence(i) for i in ou.group)
        else:
            intro = pieces["part_section_intro"]
            text += intro.format(section_title=ou.section, part_title=ou.part)
            if ou.covered:
                text += sentence(unit.index)
        reference = ""
        if ou.text and extra["reference"]:
            reference = pieces["inspiration"].format(text=ou.text[:size])
            reference = reference.rstrip(".").rstrip() + "."
        text += pieces["unit_quoted"].format(unit_title=ou.title, reference=reference)
        prompt = text + end
    return prompt, _openstax_trail(book, ou)


MARKER_PROMPTS = {
    "web_extract": _web_extract_prompt,
    "snippet": _snippet_prompt,
    "openstax_book": _openstax_prompt,
}


def _units(seeds, block, settings) -> list[Unit]:
    units = []
    for row in seeds.iter_rows(named=True):
        if block.options.get("builder") != "openstax_book":
            units.append(Unit(row["id"], row))
            continue
        book = parse_openstax_book(row, block.options, f"{settings.source}: row {row['id']!r}")
        units += [Unit(f"{row['id']}/{k:05d}", row, book, k) for k in range(len(book.units))]
    return units


def _labels(block, name: str) -> tuple[str, str]:
    entry, _ = _entry_of(block, name)
    # openstax: the original builder's own audience column (<entry>_<with_ref|no_ref>).
    return entry["format"], entry.get("audience") or name


def build_prompts(seeds, templates, settings: step_settings.Prompts, draws: Draws | None = None):
    """Prompts shard (Polars DataFrame, PROMPT_COLUMNS) of a seed shard.

    `templates`: the source's Block (or a `project` entries mapping); `draws`: the random
    choices (default: Draws, from the seeded RNGs).
    """
    import polars as pl

    family = settings.family
    schema = {c: pl.String for c in PROMPT_COLUMNS}
    if CHOICE_KEY[family] is None:
        return _taken_prompts(seeds, settings, schema)
    block = as_block(templates, family)
    names = choice_settings(family, settings, block)[CHOICE_KEY[family]]
    check_templates(family, block, names)
    if settings.fan_out == "all":  # the set's order, whatever the config's list order
        names = [n for n in choice_names(block) if n in names]
    builder = block.options.get("builder") if block.syntax == "markers" else None
    make = MARKER_PROMPTS.get(builder, _format_prompt)
    draws = draws or Draws()
    rows = []
    for unit in _units(seeds, block, settings):
        if settings.fan_out == "all":
            chosen = [
                (f"{unit.id}/{n}", n, rng_for(settings.seed, "prompt", unit.id, n)) for n in names
            ]
        else:
            rng = rng_for(settings.seed, "prompt", unit.id)
            chosen = [(unit.id, names[rng.randrange(len(names))], rng)]
        for row_id, name, rng in chosen:
            prompt, seed_text = make(unit, name, rng, block, settings, draws)
            fmt, audience = _labels(block, name)
            rows.append(
                {
                    "id": row_id,
                    "source": settings.source,
                    "family": family,
                    "prompt": prompt,
                    "seed_data": settings.seed_data,
                    "format": fmt,
                    "audience": audience,
                    "seed_text": seed_text,
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
            "seed_text": None,
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
        help="JSON (or @file): source, family, seed, styles|audiences, fan_out, seed_data, "
        "template_set, templates, variant, extract_max_chars, topic_probability",
    )


def main(args) -> int:
    from cosmopedia.io import read_parquet, write_parquet

    settings = step_settings.load(step_settings.Prompts, args.settings)
    if settings.family not in CHOICE_KEY:
        raise CliError(f"unknown seed family {settings.family!r}")
    block = None
    if CHOICE_KEY[settings.family] is not None:
        try:
            block = template_files.load_block(settings.templates, settings.family, settings.variant)
        except (OSError, PlanError) as exc:
            raise CliError(str(exc)) from exc
    seeds = read_parquet(args.input)
    prompts = build_prompts(seeds, block, settings)
    write_parquet(prompts, args.output)
    log.info(
        "built %d prompts from %d seed rows into %s", prompts.height, seeds.height, args.output
    )
    return 0
