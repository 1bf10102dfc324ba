import polars as pl
import pytest

from conftest import prompts_settings
from cosmopedia import prompts
from cosmopedia.errors import CliError
from cosmopedia.prompts import check_templates
from cosmopedia.templates import load_family as load_family_templates


def build_prompts(seeds, templates, settings: dict):
    return prompts.build_prompts(seeds, templates, prompts_settings(settings))


TEMPLATES = "resources/prompts/templates.yaml"


def web_settings(**overrides):
    settings = {
        "source": "web",
        "family": "web_samples",
        "seed": 0,
        "styles": ["textbook_academic", "textbook_narrative", "blogpost", "wikihow"],
        "extract_max_chars": 1000,
        "topic_probability": 0.5,
        "seed_data": "web_samples_v1",
    }
    return settings | overrides


def web_seeds(n=40):
    return pl.DataFrame(
        {
            "id": [f"web/s/{i:07d}" for i in range(n)],
            "text": [f"Extract number {i} about tide pools. " * (i % 5 + 1) for i in range(n)],
            "topic": ["Marine life" if i % 2 else None for i in range(n)],
        }
    )


def test_web_prompts_quote_the_extract_and_use_every_style():
    templates = load_family_templates(TEMPLATES, "web_samples")
    prompts = build_prompts(web_seeds(), templates, web_settings())
    assert prompts.columns == [
        "id", "source", "family", "prompt", "seed_data", "format", "audience", "seed_text"
    ]  # fmt: skip
    assert prompts.height == 40
    for row in prompts.iter_rows(named=True):
        assert f'Here is an extract from a webpage: "{row["seed_text"]}".' in row["prompt"]
        assert row["seed_data"] == "web_samples_v1"  # the source's label, as published
    assert set(prompts["format"]) == {"textbook", "textbook_narrative", "blogpost", "wikihow"}
    # Topics only appear for rows that have one, and not for all of them.
    with_topic = prompts.filter(pl.col("prompt").str.contains("related to Marine life"))
    assert 0 < with_topic.height < 20


def test_prompts_are_deterministic_per_row_and_independent_of_other_rows():
    templates = load_family_templates(TEMPLATES, "web_samples")
    seeds = web_seeds()
    full = build_prompts(seeds, templates, web_settings())
    subset = build_prompts(seeds.tail(7), templates, web_settings())
    assert full.tail(7).equals(subset)
    assert not full.equals(build_prompts(seeds, templates, web_settings(seed=1)))


def test_extract_is_truncated():
    templates = load_family_templates(TEMPLATES, "web_samples")
    seeds = pl.DataFrame({"id": ["web/s/0"], "text": ["x" * 5000], "topic": [None]})
    prompts = build_prompts(seeds, templates, web_settings(extract_max_chars=1000))
    assert len(prompts["seed_text"][0]) == 1000


def test_outline_prompt_names_the_unit_and_what_was_covered():
    templates = load_family_templates(TEMPLATES, "course_outline")
    seeds = pl.DataFrame(
        {
            "id": ["o/s/0", "o/s/1"],
            "course": ["Tides 101", "Tides 101"],
            "section": ["1. Basics", "1. Basics"],
            "unit": ["1.1. What is a tide", "1.2. The Moon"],
            "covered": [[], ["1.1. What is a tide"]],
        }
    )
    settings = {"source": "o", "family": "course_outline", "seed": 0, "audiences": ["college"]}
    prompts = build_prompts(seeds, templates, settings)
    first, second = prompts.to_dicts()
    assert 'The new unit is titled "1.2. The Moon".' in second["prompt"]
    assert "already covered in this section are: 1.1. What is a tide." in second["prompt"]
    assert "first unit of the section" in first["prompt"]
    assert second["seed_text"] == "Tides 101 > 1. Basics > 1.2. The Moon"
    assert second["audience"] == "college_students"


def test_unknown_style_is_named():
    templates = load_family_templates(TEMPLATES, "stories")
    with pytest.raises(CliError, match="unknown style 'epic_poem'"):
        check_templates("stories", templates, ["epic_poem"])


def test_template_missing_its_placeholder_is_named():
    templates = {"blogpost": {"format": "b", "audience": "g", "template": "Write a post."}}
    with pytest.raises(
        CliError, match=r"web_samples.blogpost: missing placeholder\(s\) \['extract'\]"
    ):
        check_templates("web_samples", templates, ["blogpost"])


# --- every family ------------------------------------------------------------------------


def outline_seeds(**extra):
    base = {
        "id": ["o/s/0"],
        "course": ["Tides 101"],
        "section": ["1. Basics"],
        "unit": ["1.2. The Moon"],
        "covered": [["1.1. What is a tide"]],
        "chapter": [None],
        "reference": [None],
    }
    return pl.DataFrame(base | {k: [v] for k, v in extra.items()})


def outline_settings(**overrides):
    settings = {
        "source": "o",
        "family": "course_outline",
        "seed": 0,
        "audiences": ["middle_school"],
        "extract_max_chars": 1000,
    }
    return settings | overrides


def test_outline_chapter_joins_the_trail_and_the_context():
    templates = load_family_templates(TEMPLATES, "course_outline")
    row = build_prompts(outline_seeds(chapter="Ch. 1 Oceans"), templates, outline_settings())
    row = row.to_dicts()[0]
    assert row["seed_text"] == "Tides 101 > Ch. 1 Oceans > 1. Basics > 1.2. The Moon"
    assert "The section is part of the chapter Ch. 1 Oceans. The units already" in row["prompt"]
    assert row["audience"] == "middle_school_students"
    assert row["prompt"].count('"') == 2


def test_outline_with_reference_quotes_the_reference_truncated():
    templates = load_family_templates(TEMPLATES, "course_outline")
    reference = "The Moon pulls on the oceans. " * 100
    for audience in ["young_children", "middle_school", "high_school", "college", "researchers"]:
        settings = outline_settings(audiences=[audience], extract_max_chars=300)
        row = build_prompts(outline_seeds(reference=reference), templates, settings).to_dicts()[0]
        assert f'"{reference[:300]}".' in row["prompt"], audience
        assert row["prompt"].count('"') == 2
        assert "The new unit is titled 1.2. The Moon." in row["prompt"]


def test_outline_reference_needs_a_template_with_reference():
    templates = {"college": {"format": "t", "audience": "c", "template": "{course}{section}{unit}"}}
    settings = outline_settings(audiences=["college"])
    with pytest.raises(CliError, match=r"course_outline.college: no 'template_with_reference'"):
        build_prompts(outline_seeds(reference="Text."), templates, settings)


def test_wikihow_prompt_quotes_the_title():
    templates = load_family_templates(TEMPLATES, "wikihow")
    seeds = pl.DataFrame({"id": ["w/s/0"], "title": ["How to Repot a Cactus"]})
    settings = {"source": "w", "family": "wikihow", "seed": 0, "styles": ["wikihow"]}
    row = build_prompts(seeds, templates, settings).to_dicts()[0]
    assert 'wikiHow article: "How to Repot a Cactus".' in row["prompt"]
    assert (row["seed_text"], row["format"], row["audience"]) == (
        "How to Repot a Cactus", "wikihow", "general",
    )  # fmt: skip


def test_auto_math_text_styles_and_truncation():
    templates = load_family_templates(TEMPLATES, "auto_math_text")
    seeds = pl.DataFrame(
        {"id": [f"m/s/{i}" for i in range(30)], "text": ["Let x be real. " * 200] * 30}
    )
    settings = {
        "source": "m", "family": "auto_math_text", "seed": 0,
        "styles": ["college", "grade_school"], "extract_max_chars": 1000,
    }  # fmt: skip
    prompts = build_prompts(seeds, templates, settings)
    assert set(prompts["audience"]) == {"college_students", "grade_school_students"}
    assert set(prompts["format"]) == {"educational_piece"}
    assert set(prompts["seed_text"].str.len_chars()) == {1000}


def test_prompts_family_takes_prompts_as_they_are():
    seeds = pl.DataFrame(
        {
            "id": ["p/s/0", "p/s/1"],
            "prompt": ['Write a "story".\n', "Explain tides."],
            "seed_data": ["ultrachat", None],
            "format": ["story_children", None],
            "audience": ["young_children", None],
        }
    )
    settings = {"source": "p", "family": "prompts", "seed": 0}
    prompts = build_prompts(seeds, {}, settings)
    assert prompts.to_dicts() == [
        {"id": "p/s/0", "source": "p", "family": "prompts", "prompt": 'Write a "story".\n',
         "seed_data": "ultrachat", "format": "story_children", "audience": "young_children",
         "seed_text": None},
        {"id": "p/s/1", "source": "p", "family": "prompts", "prompt": "Explain tides.",
         "seed_data": None, "format": None, "audience": None, "seed_text": None},
    ]  # fmt: skip


def test_styles_default_to_every_template_of_the_family():
    templates = load_family_templates(TEMPLATES, "stories")
    seeds = pl.DataFrame({"id": [f"s/s/{i}" for i in range(60)], "text": ["A question."] * 60})
    prompts = build_prompts(seeds, templates, {"source": "s", "family": "stories", "seed": 0})
    assert prompts["format"].n_unique() == len(templates) == 5


def test_project_templates_keep_seed_material_in_one_pair_of_quotes():
    """The project set's rule (the dummy engine reads the material between the quotes).
    The cosmopedia-v0.1 set keeps the original texts, quotes and all: tests/test_templates.py."""
    from cosmopedia.templates import read_set

    blocks = read_set(TEMPLATES)["families"]
    assert set(blocks) == {"web_samples", "stories", "course_outline", "wikihow", "auto_math_text"}
    for family, block in blocks.items():
        entries = block["entries"]
        check_templates(family, entries, list(entries))
        for name, entry in entries.items():
            for key in ("template", "template_with_reference"):
                if key in entry:
                    text = entry[key]
                    assert text.count('"') == 2, (family, name, key)
                    first, last = text.index('"'), text.rindex('"')
                    assert text[first + 1 : last].startswith("{"), (family, name, key)
                    assert text[first + 1 : last].endswith("}"), (family, name, key)


def test_template_variant_missing_its_placeholder_is_named():
    entry = {
        "format": "t", "audience": "c", "template": "{course} {section} {unit}",
        "template_with_reference": "{course} {section} {unit}",
    }  # fmt: skip
    with pytest.raises(
        CliError,
        match=r"course_outline.college.template_with_reference: missing placeholder\(s\) "
        r"\['reference'\]",
    ):
        check_templates("course_outline", {"college": entry}, ["college"])


def test_template_entry_with_an_unknown_key_or_bad_braces_is_named():
    entry = {"format": "b", "audience": "g", "template": '"{extract}"', "tempalte": "x"}
    with pytest.raises(CliError, match=r"web_samples.blogpost: unknown key\(s\) \['tempalte'\]"):
        check_templates("web_samples", {"blogpost": entry}, ["blogpost"])
    entry = {"format": "b", "audience": "g", "template": '"{extract}" {oops'}
    with pytest.raises(CliError, match=r"web_samples.blogpost.template: malformed braces"):
        check_templates("web_samples", {"blogpost": entry}, ["blogpost"])


def test_fan_out_all_builds_every_style_per_row_with_stable_ids():
    templates = load_family_templates(TEMPLATES, "web_samples")
    seeds = web_seeds(10)
    styles = ["wikihow", "blogpost"]  # the set's order (blogpost first) wins over the list's
    full = build_prompts(seeds, templates, web_settings(styles=styles, fan_out="all"))
    assert full.height == 20
    assert full["id"].to_list()[:2] == ["web/s/0000000/blogpost", "web/s/0000000/wikihow"]
    assert full["id"].n_unique() == full.height
    # Each (row, style) has its own RNG: other rows and styles change nothing.
    alone = build_prompts(
        seeds.tail(1), templates, web_settings(styles=["blogpost"], fan_out="all")
    )
    assert alone.row(0) == full.filter(pl.col("id") == "web/s/0000009/blogpost").row(0)
