"""Template set files: the cosmopedia-v0.1 texts stay byte-exact, and the loader is strict."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cosmopedia.errors import CliError, PlanError
from cosmopedia.prompts import check_templates, choice_names
from cosmopedia.templates import load_block, read_set

REPO = Path(__file__).resolve().parent.parent
V01 = str(REPO / "resources" / "prompts" / "cosmopedia-v0.1.yaml")
COMMIT = "38789cac6b7a15047cec96ffd14d4c6dfd9cdf4c"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def v01_blocks():
    data = read_set(V01)
    for family, body in data["families"].items():
        for variant in body["variants"]:
            yield load_block(V01, family, variant)


def test_v01_texts_match_the_recorded_sha256_of_the_original_constants():
    """22 texts (4 web, 5 + 3 stories, 2 auto_math_text, 4 x 2 openstax). The sha256 were
    taken from the original constants; an editor stripping a trailing space shows here."""
    count = 0
    for block in v01_blocks():
        for name, entry in block.entries.items():
            if "template" in entry:
                assert sha256(entry["template"]) == entry["sha256"], (block.family, name)
                count += 1
            else:
                for part in ("beginning", "criteria"):
                    assert sha256(entry[part]) == entry["sha256"][part], (name, part)
                    count += 1
    assert count == 22


def test_v01_variants_record_their_source_and_pass_the_checks():
    assert read_set(V01)["source"] == {"repo": "huggingface/cosmopedia", "commit": COMMIT}
    for block in v01_blocks():
        assert block.options["commit"] == COMMIT
        assert block.options["file"].startswith("prompts/") and block.options["file"].endswith(
            ".py"
        )
        check_templates(block.family, block, choice_names(block))
    stories = read_set(V01)["families"]["stories"]["variants"]
    assert list(stories) == ["ultrachat", "openhermes"]
    assert list(stories["openhermes"]["entries"]) == [
        "young_children_story", "problem_solving_story", "reddit_post"
    ]  # fmt: skip


def test_v01_templates_keep_the_original_quotes():
    """Unlike the project set (one pair of double quotes around the seed), the original texts
    have quotes of their own: they are kept exactly."""
    web = load_block(V01, "web_samples")
    assert web.entries["blogpost"]["template"].count('"') == 6
    story = load_block(V01, "stories", "ultrachat")
    assert "\u201c<EXTRACT>\u201d" in story.entries["young_children_story"]["template"]


def test_openstax_choices_are_audience_and_reference_in_the_original_order():
    block = load_block(V01, "openstax")
    names = choice_names(block)
    assert names[:4] == [
        "young_children_with_ref", "middle_school_students_with_ref",
        "professionals_and_researchers_with_ref", "college_students_with_ref",
    ]  # fmt: skip
    assert names[4:] == [n.replace("_with_ref", "_no_ref") for n in names[:4]]


def test_a_family_with_several_variants_needs_one_named():
    with pytest.raises(PlanError, match="several variants \\(ultrachat, openhermes\\)"):
        load_block(V01, "stories")
    with pytest.raises(PlanError, match="no variant 'sharegpt'"):
        load_block(V01, "stories", "sharegpt")
    with pytest.raises(PlanError, match="no block for seed family 'wikihow'"):
        load_block(V01, "wikihow")


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "set: s\nsyntax: format\nfamilies:\n  stories:\n    entries:\n"
        "      reddit_post: {format: a, audience: b, template: '{snippet}'}\n"
        "      reddit_post: {format: c, audience: d, template: '{snippet}'}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        CliError, match=r"dup.yaml:7:7: duplicate key 'reddit_post' \(first at line 6\)"
    ):
        read_set(str(path))
