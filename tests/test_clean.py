import polars as pl

from cosmopedia import settings
from cosmopedia.clean import clean_shard

# The schema's default openers, a lower minimum.
SETTINGS = settings.from_dict(settings.Clean, {"min_tokens": 5}, "clean")


def test_clean_strips_openers_and_drops_with_reasons():
    generations = pl.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "text": [
                "Hello and welcome to class! Tides rise twice a day here.",
                "Too short.",
                None,
                "Welcome, readers, to the guide. Hello is a word this sentence keeps.",
            ],
            "text_token_length": [12, 3, None, 15],
            "finish_reason": ["eos_token", "eos_token", "error", "length"],
            "error": [None, None, "overloaded: too many requests", None],
        }
    )
    kept, dropped = clean_shard(generations, SETTINGS)
    assert kept["id"].to_list() == ["a", "d"]
    assert kept["text"].to_list() == [
        "Tides rise twice a day here.",
        "Hello is a word this sentence keeps.",
    ]
    assert dict(zip(dropped["id"], dropped["reason"], strict=True)) == {
        "b": "too_short",
        "c": "failed: overloaded",
    }
