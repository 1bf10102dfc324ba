"""Golden prompts: each family's builder on a fixed small input gives checked-in output.

tests/golden/<family>.json holds the input seed rows, the prompt settings and the prompts
they give (through ingest and the prompt builder, with resources/prompts/templates.yaml).
A change to a template, a builder or the per-row random choices shows up as a diff of
these files. After an intended change, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py
    # or
    .venv/bin/python tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ingest_settings, prompts_settings
from cosmopedia.ingest import ingest_records
from cosmopedia.prompts import build_prompts, family_templates

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
TEMPLATES = REPO / "resources" / "prompts" / "templates.yaml"

# seed 10: the first salt with which these few rows reach every style and audience.
PROMPT_SETTINGS = {"seed": 10, "extract_max_chars": 160, "topic_probability": 0.5}

# family -> (source settings, seed records as they would appear in a seed file)
CASES: dict[str, tuple[dict, list[dict]]] = {
    "web_samples": (
        {"styles": ["textbook_academic", "textbook_narrative", "blogpost", "wikihow"]},
        [
            {"text": "Rain gardens are shallow planted dips that catch runoff from roofs and "
             "driveways. The soil and roots filter the water before it reaches streams, and "
             "most designs use native plants that tolerate both flooding and drought.",
             "topic": "Gardening"},
            {"text": "Our bakery switched to a sourdough starter last spring. The loaves take "
             "longer to rise but keep for days.", "topic": None},
            {"text": "A lunar eclipse happens when the Earth passes between the Sun and the "
             "Moon, so the Moon sits in the Earth's shadow.", "topic": "Astronomy"},
            {"text": "The city council voted to extend the bike lane on Elm Street by two "
             "kilometres.", "topic": "Local news"},
            {"text": "Compound interest means earning interest on interest: a balance that grows "
             "by five percent a year doubles in about fourteen years.", "topic": "Finance"},
            {"text": "Knitting a scarf starts with casting on stitches.", "topic": None},
        ],
    ),
    "stories": (
        {"styles": ["young_children_story", "morality_story", "problem_solving_story",
                    "forums_story", "reddit_post"]},
        [
            {"text": "How do bees find their way back to the hive after collecting nectar?"},
            {"text": "My neighbour keeps parking in front of my driveway. How should I bring "
             "it up without starting a feud?"},
            {"text": "Give me three tips for keeping a sourdough starter alive on vacation."},
            {"text": "Why does the sky turn red at sunset?"},
            {"text": "I found a wallet with cash on the bus. What is the right thing to do?"},
            {"text": "Explain how a bicycle gear system makes climbing hills easier."},
        ],
    ),
    "course_outline": (
        {"audiences": ["young_children", "middle_school", "high_school", "college",
                       "researchers"]},
        [
            {"course": "Introduction to Astronomy", "chapter": "1. The Sky", "section":
             "1.1 Stars", "unit": "1.1.1 What a star is", "covered": []},
            {"course": "Introduction to Astronomy", "chapter": "1. The Sky", "section":
             "1.1 Stars", "unit": "1.1.2 Why stars twinkle", "covered": ["1.1.1 What a star is"]},
            {"course": "Personal Finance", "section": "Budgets", "unit": "Tracking spending",
             "covered": ["Why budget", "Income"]},
            {"course": "Biology 2e", "chapter": "Cell Structure", "section": "Eukaryotic Cells",
             "unit": "The Nucleus", "covered": ["The Plasma Membrane"],
             "reference": "The nucleus is the largest organelle of a eukaryotic cell. It holds "
             "the DNA and directs the making of ribosomes and proteins."},
            {"course": "Chemistry", "unit": "Atoms and molecules", "reference": "Matter is made "
             "of atoms, which combine into molecules."},
            {"course": "World History", "section": "Ancient Rome", "unit": "The Republic"},
        ],
    ),
    "wikihow": (
        {"styles": ["wikihow"]},
        [
            {"title": "How to Repot a Cactus"},
            {"title": "How to Change a Bicycle Tire"},
            {"title": "How to Write a Thank You Note"},
        ],
    ),
    "auto_math_text": (
        {"styles": ["college", "grade_school"]},
        [
            {"text": "Theorem. Every bounded monotone sequence of real numbers converges. "
             "Proof. Let the sequence be increasing and bounded above by M; the supremum of "
             "its terms exists by completeness."},
            {"text": "To add fractions with different denominators, first rewrite them with a "
             "common denominator."},
            {"text": "The probability of rolling two sixes with two fair dice is 1/36."},
            {"text": "A matrix is invertible exactly when its determinant is not zero."},
        ],
    ),
    "prompts": (
        {},
        [
            {"prompt": "Write a short story for young children about a lost kite.",
             "seed_data": "ultrachat", "format": "story_children", "audience": "young_children"},
            {"prompt": "Write a blog post about composting in small flats.\n"},
        ],
    ),
}  # fmt: skip


def build(family: str) -> dict:
    choices, records = CASES[family]
    source = family
    settings = {"source": source, "family": family, "columns": {}, "id_column": None}
    seeds = ingest_records(records, f"{family}.jsonl", source, "golden", ingest_settings(settings))
    prompt_settings = {
        "source": source,
        "family": family,
        "seed_data": source,
        **PROMPT_SETTINGS,
        **choices,
    }
    templates = family_templates(str(TEMPLATES), family)
    prompts = build_prompts(seeds, templates, prompts_settings(prompt_settings))
    return {"settings": prompt_settings, "seeds": records, "prompts": prompts.to_dicts()}


def golden_text(family: str) -> str:
    return json.dumps(build(family), indent=2, ensure_ascii=False) + "\n"


def regenerate() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for family in CASES:
        (GOLDEN / f"{family}.json").write_text(golden_text(family), encoding="utf-8")
        print(f"wrote {GOLDEN / f'{family}.json'}")


@pytest.mark.parametrize("family", list(CASES))
def test_golden_prompts(family):
    path = GOLDEN / f"{family}.json"
    text = golden_text(family)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest tests/test_golden.py"
    assert json.loads(text) == json.loads(path.read_text(encoding="utf-8")), (
        f"prompts of {family} differ from {path}; if the change is intended, regenerate "
        "with UPDATE_GOLDEN=1 pytest tests/test_golden.py and review the diff"
    )


def test_golden_cases_cover_every_family_style_and_audience():
    from cosmopedia.prompts import CHOICE_KEY

    # openstax has templates only in the cosmopedia-v0.1 set (tests/test_fidelity.py).
    assert set(CASES) == set(CHOICE_KEY) - {"openstax"}
    for family, (choices, _) in CASES.items():
        key = CHOICE_KEY[family]
        if key is None:
            continue
        templates = family_templates(str(TEMPLATES), family)
        assert choices[key] == list(templates), family
        used = {(p["format"], p["audience"]) for p in build(family)["prompts"]}
        wanted = {(e["format"], e["audience"]) for e in templates.values()}
        assert used == wanted, f"{family}: the golden input does not reach every entry"


if __name__ == "__main__":
    regenerate()
