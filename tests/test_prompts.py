import polars as pl
import pytest

from cosmopedia.cli import CliError
from cosmopedia.plan import load_family_templates
from cosmopedia.prompts import build_prompts, check_templates

TEMPLATES = "resources/prompts/templates.yaml"


def web_settings(**overrides):
    settings = {
        "source": "web",
        "family": "web_samples",
        "seed": 0,
        "styles": ["textbook_academic", "textbook_narrative", "blogpost", "wikihow"],
        "extract_max_chars": 1000,
        "topic_probability": 0.5,
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
        "id", "source", "family", "prompt", "seed_data", "format", "audience"
    ]  # fmt: skip
    assert prompts.height == 40
    for row in prompts.iter_rows(named=True):
        assert f'Here is an extract from a webpage: "{row["seed_data"]}".' in row["prompt"]
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
    assert len(prompts["seed_data"][0]) == 1000


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
    assert second["seed_data"] == "Tides 101 > 1. Basics > 1.2. The Moon"
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
