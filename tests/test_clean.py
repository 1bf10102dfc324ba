import polars as pl
import pytest

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


# --- text_token_length with the model's tokenizer ------------------------------------------


def tiny_tokenizer(path):
    """A real tokenizer.json (WordLevel on whitespace, a BOS added like Llama/Mixtral's),
    built here with the tokenizers library: nothing downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "tides": 3, "rise": 4, "twice": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    tokenizer.save(str(path))
    return str(path)


def generations(texts, lengths):
    n = len(texts)
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": texts,
            "text_token_length": lengths,
            "finish_reason": ["eos_token"] * n,
            "error": [None] * n,
        },
        schema_overrides={"text_token_length": pl.Int64, "error": pl.String},
    )


def v01_clean(**given):
    config = settings.validate_config(
        {
            "dataset": {"name": "d", "version": "v"},
            "sources": {"s": {"family": "stories", "files": "x.jsonl"}},
            "clean": {"preset": "cosmopedia-v0.1", **given},
        }
    )
    return config, settings.from_dict(
        settings.Clean,
        {k: v for k, v in config["clean"].items() if k not in ("preset", "tokenizer")},
    )


def test_the_v01_preset_keeps_texts_as_generated_and_counts_the_bos(tmp_path):
    from cosmopedia.tokens import Counter

    config, clean = v01_clean(min_tokens=4)
    assert config["clean"]["boilerplate_openers"] == [] and clean.strip is False
    counter = Counter(tiny_tokenizer(tmp_path / "tokenizer.json"), clean.count_special_tokens)
    texts = ["Hello there! tides rise twice  ", "tides rise", ""]
    kept, dropped = clean_shard(generations(texts, [99, 99, 0]), clean, counter)
    # Hello, there, !, tides, rise, twice + the BOS; 2 words + BOS is under 4; "" is empty.
    assert kept.to_dicts()[0]["text"] == texts[0]
    assert kept["text_token_length"].to_list() == [7]
    assert dict(zip(dropped["id"], dropped["reason"], strict=True)) == {
        "r1": "too_short",
        "r2": "empty",
    }
    assert dropped.filter(pl.col("id") == "r1")["text_token_length"].item() == 3


def test_a_preset_fills_only_the_keys_a_config_leaves_out():
    config, clean = v01_clean(strip=True)
    assert clean.strip is True and clean.boilerplate_openers == ()
    config, clean = v01_clean()
    assert (clean.min_tokens, clean.token_count, clean.count_special_tokens) == (150, "auto", True)
    default = settings.validate_config(
        {"dataset": {"name": "d", "version": "v"}, "sources": {"s": {"family": "stories"}}}
    )
    assert default["clean"]["preset"] == "project" and default["clean"]["strip"] is True
    assert default["clean"]["boilerplate_openers"]


def test_planning_finds_the_models_tokenizer_in_the_hub_cache(tmp_path, monkeypatch):
    from cosmopedia import plan
    from cosmopedia.errors import PlanError
    from cosmopedia.hashing import sha256_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    revision = "ab" * 20
    config, _ = v01_clean()
    config["generation"] |= {"model": "org/model", "revision": revision}
    assert plan.clean_job(config).tokenizer is None  # auto: not cached, the engine's count
    config["clean"]["token_count"] = "tokenizer"
    with pytest.raises(PlanError, match="no tokenizer.json of org/model at revision abab"):
        plan.clean_job(config)
    snapshot = tmp_path / "hub" / "models--org--model" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    path = tiny_tokenizer(snapshot / "tokenizer.json")
    job = plan.clean_job(config)
    assert job.tokenizer == settings.TokenizerFile(None, "org/model", revision, sha256_file(path))
    # The job finds the same file and counts with it; the record names no local path.
    from cosmopedia.clean import token_counter

    counter, record = token_counter(job)
    assert counter.count(["tides rise"]) == [3]
    assert record == {
        "token_count": "tokenizer",
        "tokenizer": {"model": "org/model", "revision": revision, "sha256": sha256_file(path)},
        "count_special_tokens": True,
    }
    # A branch name resolves through the cache's refs, as huggingface_hub's does.
    (tmp_path / "hub" / "models--org--model" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--model" / "refs" / "main").write_text(revision)
    config["generation"]["revision"] = "main"
    assert plan.clean_job(config).tokenizer.sha256 == sha256_file(path)
