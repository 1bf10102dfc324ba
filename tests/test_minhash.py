"""MinHash steps against datatrove run directly, on a corpus with planted duplicates."""

from __future__ import annotations

import json
import random
import shutil
import string
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cosmopedia import cli, minhash, settings
from cosmopedia.errors import CliError, PlanError
from cosmopedia.hashing import sha256_file
from cosmopedia.io import read_parquet, write_parquet

SETTINGS = {"tokenizer": "spacy"}  # the rest: datatrove's defaults
KEYS = ["stories/stories-00000", "web/web-00000", "web/web-00001", "web/web-00002"]
EMPTY_KEY = "web/web-00002"


def _vocabulary(rng: random.Random, n: int = 3000) -> list[str]:
    return sorted(
        {"".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(n)}
    )


def _text(rng: random.Random, vocab: list[str], n_words: int) -> str:
    words = rng.choices(vocab, k=n_words)
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, n_words, 12)]
    return " ".join(sentences)


def _mutate(rng: random.Random, vocab: list[str], text: str, n_changes: int) -> str:
    words = text.split(" ")
    for pos in rng.sample(range(len(words)), n_changes):
        words[pos] = rng.choice(vocab)
    return " ".join(words)


def make_corpus(root: Path) -> tuple[dict[str, Path], list[set[str]]]:
    """4 shards (one empty), 60 docs + planted near/exact duplicates; returns clusters of ids."""
    rng = random.Random(20240501)
    vocab = _vocabulary(rng)
    sizes = {"stories/stories-00000": 12, "web/web-00000": 24, "web/web-00001": 24}
    rows: dict[str, list[dict]] = {key: [] for key in KEYS}
    for key, n in sizes.items():
        shard = key.split("/")[1]
        for i in range(n):
            words = rng.randint(150, 400)
            rows[key].append({"id": f"{shard}-{i:03d}", "text": _text(rng, vocab, words)})
    rows["web/web-00001"].append({"id": "web-00001-short", "text": "Too short."})  # no signature

    planted = []
    # (source doc, destination shard, words changed; 0 = exact copy)
    plan = [
        ("web/web-00000", 3, "web/web-00000", 2),
        ("web/web-00000", 7, "web/web-00001", 3),
        ("stories/stories-00000", 4, "web/web-00001", 2),
        ("web/web-00001", 5, "stories/stories-00000", 0),
    ]
    for n, (src_key, src_i, dst_key, changes) in enumerate(plan):
        src = rows[src_key][src_i]
        words = src["text"].split(" ")
        if len(words) < 300:  # long docs: Jaccard stays high after the edits
            src["text"] = _text(rng, vocab, 320)
        text = _mutate(rng, vocab, src["text"], changes) if changes else src["text"]
        copy_id = f"{dst_key.split('/')[1]}-copy{n}"
        rows[dst_key].append({"id": copy_id, "text": text})
        planted.append({src["id"], copy_id})

    paths = {}
    for key in KEYS:
        df = pl.DataFrame(rows[key], schema={"id": pl.String, "text": pl.String})
        df = df.with_columns(
            topic=pl.lit(key.split("/")[0]), n_words=pl.col("text").str.split(" ").list.len()
        )
        paths[key] = root / "clean" / f"{key}.parquet"
        write_parquet(df, paths[key])
    return paths, planted


def run_pipeline(
    inputs: dict[str, Path], work: Path, settings: dict = SETTINGS, index_from=()
) -> dict:
    """The four steps through the CLI, the way the Snakemake rules call them."""
    s = json.dumps(settings)
    nb = minhash.parse_settings(settings).num_buckets
    sig = {k: work / "sig" / k for k in inputs}
    stream = {k: work / "stream" / f"{k}.json" for k in inputs}
    for key, path in inputs.items():
        argv = ["minhash-signature", "--input", str(path), "--output-dir", str(sig[key])]
        assert cli.main([*argv, "--stream", str(stream[key]), "--settings", s]) == 0
    sig_args = [f"{k}={v}" for k, v in sig.items()]
    argv = ["minhash-buckets", "--signatures", *sig_args, "--dups-dir", str(work / "dups")]
    argv += ["--index-dir", str(work / "index"), "--index-from", *map(str, index_from)]
    assert cli.main([*argv, "--settings", s]) == 0
    dups = [minhash.dups_path(work / "dups", b) for b in range(nb)]
    argv = ["minhash-cluster", "--dups", *map(str, dups), "--signatures", *sig_args]
    argv += ["--remove-dir", str(work / "remove"), "--clusters", str(work / "clusters.parquet")]
    argv += ["--report", str(work / "cluster_report.tsv")]
    assert cli.main([*argv, "--settings", s]) == 0
    for key, path in inputs.items():
        argv = ["minhash-filter", "--input", str(path), "--stream", str(stream[key])]
        argv += ["--remove", str(work / "remove" / f"{key}.remove")]
        argv += ["--output", str(work / "dedup" / f"{key}.parquet")]
        argv += ["--removed", str(work / "removed" / f"{key}.parquet")]
        assert cli.main([*argv, "--settings", s]) == 0
    return {"sig": sig, "stream": stream, "dups": dups}


def datatrove_removed_ids(inputs: dict[str, Path], work: Path) -> set[str]:
    """The same four stages run directly by datatrove on one folder, default layout."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    config = minhash.minhash_config(minhash.parse_settings(SETTINGS))
    keys = sorted(inputs)

    def docs(key):
        for row in pl.read_parquet(inputs[key]).iter_rows(named=True):
            yield Document(text=row["text"], id=row["id"])

    for rank, key in enumerate(keys):
        MinhashDedupSignature(str(work / "sigs"), config=config).run(docs(key), rank, len(keys))
    for b in range(config.num_buckets):
        MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config).run(
            None, b, config.num_buckets
        )
    MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config).run()
    removed = set()
    for rank, key in enumerate(keys):
        kept = {d.id for d in MinhashDedupFilter(str(work / "remove")).run(docs(key), rank)}
        removed |= {d.id for d in docs(key)} - kept
    return removed


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    inputs, planted = make_corpus(root)
    return inputs, planted


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    inputs, _ = corpus
    work = tmp_path_factory.mktemp("run1")
    return work, run_pipeline(inputs, work)


def _removed_ids(work: Path) -> set[str]:
    return {i for k in KEYS for i in read_parquet(work / "removed" / f"{k}.parquet")["id"]}


def test_matches_datatrove_and_removes_one_per_planted_cluster(corpus, first_run, tmp_path):
    inputs, planted = corpus
    work, _ = first_run
    removed = _removed_ids(work)
    assert removed == datatrove_removed_ids(inputs, tmp_path)
    for ids in planted:
        assert len(ids & removed) == 1, ids
    assert len(removed) == len(planted)  # nothing else in the random corpus is a duplicate

    for key in KEYS:
        source = read_parquet(inputs[key])
        kept = read_parquet(work / "dedup" / f"{key}.parquet")
        dropped = read_parquet(work / "removed" / f"{key}.parquet")
        assert kept.columns == source.columns
        assert dropped.columns == [*source.columns, "reason"]
        assert set(dropped["reason"]) <= {"minhash_duplicate"}
        assert kept.equals(source.filter(~pl.col("id").is_in(dropped["id"].implode())))
        assert (work / "remove" / f"{key}.remove").exists()  # even when empty

    clusters = read_parquet(work / "clusters.parquet")
    assert clusters.columns == list(minhash.CLUSTER_SCHEMA)
    groups = clusters.group_by("cluster_id").agg(pl.col("id"), pl.col("kept").sum(), pl.len())
    assert sorted(map(set, groups["id"].to_list()), key=sorted) == sorted(planted, key=sorted)
    assert groups["kept"].to_list() == [1] * len(planted)
    assert (clusters["cluster_size"] == 2).all()
    assert set(clusters.filter(~pl.col("kept"))["id"]) == removed


def test_empty_shard_goes_through(first_run):
    work, out = first_run
    stream = json.loads(out["stream"][EMPTY_KEY].read_text())
    assert stream["n_docs"] == 0 and stream["n_signed"] == 0
    assert (work / "remove" / f"{EMPTY_KEY}.remove").read_bytes() == b""
    kept = read_parquet(work / "dedup" / f"{EMPTY_KEY}.parquet")
    assert kept.height == 0 and kept.columns == ["id", "text", "topic", "n_words"]


def test_stream_records_short_doc_without_signature(first_run):
    _, out = first_run
    stream = json.loads(out["stream"]["web/web-00001"].read_text())
    assert stream["n_signed"] == stream["n_docs"] - 1
    assert stream["settings"] == settings.to_dict(minhash.parse_settings(SETTINGS))
    sig = out["sig"]["web/web-00001"]
    assert (sig / "stream.json").read_text() == out["stream"]["web/web-00001"].read_text()
    assert read_parquet(sig / "ids.parquet").height == stream["n_docs"]


def test_second_run_is_byte_identical(corpus, first_run, tmp_path):
    inputs, _ = corpus
    work, _ = first_run
    run_pipeline(inputs, tmp_path / "elsewhere")
    first, second = all_files(work), all_files(tmp_path / "elsewhere")
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    assert not any(str(work).encode() in data for data in first.values())


def test_plan_names_the_same_signatures_as_key_value_pairs(first_run, tmp_path, capsys):
    """The workflow passes the shard plan, not 3,000 KEY=DIR pairs: same bytes out."""
    from cosmopedia import layout

    work, out = first_run
    root = tmp_path / "results" / "name" / "v1"
    entries = [dict(zip(("source", "shard"), key.split("/"), strict=True)) for key in KEYS]
    for entry, key in zip(entries, KEYS, strict=True):
        target = layout.shard_path(str(root), "signatures", entry["source"], entry["shard"])
        shutil.copytree(out["sig"][key], target)
    plan = Path(layout.global_path(str(root), "plan"))
    plan.parent.mkdir(parents=True)
    plan.write_text(json.dumps({"shards": list(reversed(entries))}))  # order does not matter
    s = json.dumps(SETTINGS)
    assert cli.main(
        ["minhash-buckets", "--plan", str(plan), "--dups-dir", str(tmp_path / "dups"),
         "--settings", s]
    ) == 0  # fmt: skip
    nb = minhash.parse_settings(SETTINGS).num_buckets
    dups = [str(minhash.dups_path(tmp_path / "dups", b)) for b in range(nb)]
    argv = ["minhash-cluster", "--dups", *dups, "--plan", str(plan), "--root", str(root)]
    argv += ["--remove-dir", str(tmp_path / "remove"), "--clusters", str(tmp_path / "c.parquet")]
    assert cli.main([*argv, "--settings", s]) == 0
    for b in range(nb):
        assert Path(dups[b]).read_bytes() == minhash.dups_path(work / "dups", b).read_bytes()
    assert all_files(tmp_path / "remove") == all_files(work / "remove")

    elsewhere = tmp_path / "plan.json"
    elsewhere.write_text(plan.read_text())
    argv = ["minhash-buckets", "--plan", str(elsewhere), "--dups-dir", str(tmp_path / "d2")]
    assert cli.main([*argv, "--settings", s]) == 2
    assert "is not <results root>/plan/shards.json; give --root" in capsys.readouterr().err
    assert not (tmp_path / "d2").exists()


def test_stale_files_beside_signatures_are_not_read(first_run, tmp_path):
    work, out = first_run
    sig = {k: tmp_path / "sig" / k for k in KEYS}
    for key in KEYS:
        shutil.copytree(out["sig"][key], sig[key])
    junk = np.arange(68 * 3, dtype=np.uint8).tobytes()
    (sig["web/web-00000"] / "bucket_000.old.sig").write_bytes(junk)
    (sig["web/web-00000"] / "00001.minhash.sig").write_bytes(junk)
    (sig["web/web-00001"] / "bucket_000").mkdir()
    (sig["web/web-00001"] / "bucket_000" / "00007.minhash.sig").write_bytes(junk)
    stale = tmp_path / "dups" / "0.dups"
    stale.parent.mkdir()
    stale.write_bytes(junk)
    (tmp_path / "dups" / "00000_00.dups").write_bytes(junk)
    minhash.buckets({k: str(v) for k, v in sig.items()}, tmp_path / "dups", SETTINGS, only=[0])
    assert stale.read_bytes() == out["dups"][0].read_bytes()
    assert Path(f"{stale}.json").read_bytes() == Path(f"{out['dups'][0]}.json").read_bytes()


def test_filter_refuses_a_different_stream(corpus, first_run, tmp_path):
    inputs, _ = corpus
    work, out = first_run
    key = "web/web-00000"
    df = read_parquet(inputs[key])
    remove = work / "remove" / f"{key}.remove"
    edited = tmp_path / "edited.parquet"
    write_parquet(df.with_columns(pl.col("text").str.replace("a", "e")), edited)
    dropped_row = tmp_path / "dropped_row.parquet"
    write_parquet(df.slice(1), dropped_row)
    outs = [tmp_path / "kept.parquet", tmp_path / "removed.parquet"]
    for bad in (edited, dropped_row):
        with pytest.raises(CliError, match="not the document stream"):
            minhash.filter_shard(bad, remove, out["stream"][key], *outs, SETTINGS)
    # Another shard's stream (the rank mix-up of datatrove's trap) is refused too.
    with pytest.raises(CliError, match="n_docs now 25, then 27"):
        minhash.filter_shard(inputs[key], remove, out["stream"]["web/web-00001"], *outs, SETTINGS)
    assert not any(p.exists() for p in outs)
    argv = ["minhash-filter", "--input", str(edited), "--remove", str(remove)]
    argv += ["--stream", str(out["stream"][key]), "--output", str(outs[0])]
    assert cli.main([*argv, "--removed", str(outs[1]), "--settings", "{}"]) == 2


def test_mixed_settings_fail_naming_the_shard(corpus, first_run, tmp_path):
    inputs, _ = corpus
    work, out = first_run
    odd = "stories/stories-00000"
    sig = {k: str(v) for k, v in out["sig"].items()}
    sig[odd] = str(tmp_path / "sig4")
    minhash.signature(inputs[odd], sig[odd], tmp_path / "s4.json", SETTINGS | {"n_grams": 4})
    with pytest.raises(CliError, match=f"shard {odd}.*n_grams=4 \\(this run: 5\\)"):
        minhash.buckets(sig, tmp_path / "d", SETTINGS)
    with pytest.raises(CliError, match=f"shard {odd}.*n_grams"):
        minhash.cluster([str(p) for p in out["dups"]], sig, tmp_path / "rm", tmp_path / "c", {})
    with pytest.raises(CliError, match="tokenizer='spacy' \\(this run: 'whitespace'\\)"):
        minhash.buckets(dict(out["sig"]), tmp_path / "d", {"tokenizer": "whitespace"})
    with pytest.raises(CliError, match="n_grams"):
        minhash.filter_shard(
            inputs[odd],
            work / "remove" / f"{odd}.remove",
            tmp_path / "s4.json",
            tmp_path / "k.parquet",
            tmp_path / "r.parquet",
            SETTINGS,
        )
    with pytest.raises(CliError, match="minhash: Additional properties .*ngrams"):
        minhash.parse_settings({"ngrams": 5})


def test_cluster_checks_dups_inputs(first_run, tmp_path):
    work, out = first_run
    sig = {k: str(v) for k, v in out["sig"].items() if k != EMPTY_KEY}
    dups = [str(p) for p in out["dups"]]
    with pytest.raises(CliError, match="other shards or signatures"):
        minhash.cluster(dups, sig, tmp_path / "rm", tmp_path / "c.parquet", SETTINGS)
    with pytest.raises(CliError, match=r"missing .dups for buckets \[13\]"):
        minhash.cluster(dups[:-1], dict(out["sig"]), tmp_path / "rm", tmp_path / "c", SETTINGS)
    assert not (tmp_path / "rm").exists()


def test_whitespace_tokenizer_finds_the_planted_clusters(corpus, tmp_path):
    inputs, planted = corpus
    run_pipeline(inputs, tmp_path, {"tokenizer": "whitespace"})
    removed = _removed_ids(tmp_path)
    assert all(len(ids & removed) == 1 for ids in planted)
    assert len(removed) == len(planted)


def test_cluster_report_has_one_row_per_cluster(corpus, first_run):
    _, planted = corpus
    work, _ = first_run
    report = pl.read_csv(work / "cluster_report.tsv", separator="\t")
    assert report.columns == minhash.REPORT_COLUMNS
    assert report.height == len(planted)
    clusters = read_parquet(work / "clusters.parquet")
    for row in report.iter_rows(named=True):
        members = {row["kept_id"], *row["removed_ids"].split(",")}
        assert members in planted and row["size"] == 2 and not row["previous_version"]
        assert set(clusters.filter(pl.col("cluster_id") == row["cluster_id"])["id"]) == members


TRICKY = (
    "I dont know; we cannot stop. Hes here, shes there, Id say wed go and youll see. It's "
    "5km away, 3kg, 10%, the 1990s, 2nd place, 4pm. Café naïve ©2024 ® ™ → ok… “quoted” — "
    "dash. gonna gotta lemme. ΑΒΓ 日本語 한국어 e-mail a@b.com http://x.y/z #tag @user ½ x²"
)


def test_spacy_cached_gives_spacys_tokens_and_signatures(tmp_path):
    from datatrove.utils.text import simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    rng = random.Random(5)
    vocab = _vocabulary(rng, 400)
    pieces = TRICKY.split(" ")
    texts = [TRICKY] + [
        f"{_text(rng, vocab, 60)} {' '.join(rng.sample(pieces, 12))} {_text(rng, vocab, 30)}"
        for _ in range(40)
    ]
    reference, fast = load_word_tokenizer("en"), minhash.CachedSpaCyTokenizer("en")
    for text in texts:
        norm = simplify_text(text)
        assert fast.word_tokenize(norm) == reference.word_tokenize(norm), text
    norm = simplify_text(TRICKY)
    assert fast.word_tokenize(norm) != norm.split()  # spaCy does split some pieces

    df = pl.DataFrame({"id": [f"d{i:02d}" for i in range(len(texts))], "text": texts})
    write_parquet(df, tmp_path / "in.parquet")
    for tok in ("spacy", "spacy_cached"):
        settings = {"tokenizer": tok}
        minhash.signature(
            tmp_path / "in.parquet", tmp_path / tok, tmp_path / f"{tok}.json", settings
        )
    for b in range(14):
        name = f"bucket_{b:03d}.sig"
        assert (tmp_path / "spacy" / name).read_bytes() == (
            tmp_path / "spacy_cached" / name
        ).read_bytes()


def test_bucket_pool_gives_the_same_duplicates(first_run, tmp_path, monkeypatch):
    _, out = first_run
    monkeypatch.setattr(minhash, "POOL_MIN_BYTES", 0)
    minhash.buckets(dict(out["sig"]), tmp_path / "dups", SETTINGS, workers=2)
    for b, path in enumerate(out["dups"]):
        assert minhash.dups_path(tmp_path / "dups", b).read_bytes() == path.read_bytes()


def make_version_2(inputs: dict[str, Path], root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Two shards: copies and near-copies of version 1's documents, new ones, a new pair.

    Returns the shards and, for each planted id, what must happen to it.
    """
    rng = random.Random(77)
    vocab = _vocabulary(rng)
    v1 = read_parquet(inputs["web/web-00000"]).filter(pl.col("n_words") >= 250)
    a, b, c = v1["text"][0], v1["text"][1], v1["text"][2]
    fresh = _text(rng, vocab, 320)
    rows = {
        "new/part-00000": [
            {"id": "v2-exact", "text": a},
            # datatrove's only_dedup_in_index=True would let one of these two slip through
            {"id": "v2-near-b1", "text": _mutate(rng, vocab, b, 1)},
            {"id": "v2-near-b2", "text": _mutate(rng, vocab, b, 2)},
            {"id": "v2-pair-1", "text": fresh},
        ],
        "new/part-00001": [
            {"id": "v2-near-c", "text": _mutate(rng, vocab, c, 2)},
            {"id": "v2-pair-2", "text": _mutate(rng, vocab, fresh, 1)},
            *({"id": f"v2-new-{i}", "text": _text(rng, vocab, 300)} for i in range(6)),
        ],
    }
    expect = {i: minhash.PREVIOUS_REASON for i in ("v2-exact", "v2-near-b1", "v2-near-b2")}
    expect |= {"v2-near-c": minhash.PREVIOUS_REASON, "v2-pair-2": minhash.REMOVED_REASON}
    expect |= {"v2-pair-1": "kept"} | {f"v2-new-{i}": "kept" for i in range(6)}
    paths = {}
    for key, shard_rows in rows.items():
        paths[key] = root / "clean" / f"{key}.parquet"
        write_parquet(pl.DataFrame(shard_rows), paths[key])
    return paths, expect


def test_version_2_drops_what_version_1_has(corpus, first_run, tmp_path):
    inputs, _ = corpus
    work, _ = first_run
    v2_inputs, expect = make_version_2(inputs, tmp_path)
    index = sorted(map(str, (work / "index").glob("*.minhash.index")))
    assert len(index) == 14
    out = run_pipeline(v2_inputs, tmp_path / "v2", index_from=index)

    got = {}
    for key in v2_inputs:
        kept = read_parquet(tmp_path / "v2" / "dedup" / f"{key}.parquet")
        removed = read_parquet(tmp_path / "v2" / "removed" / f"{key}.parquet")
        got |= dict.fromkeys(kept["id"], "kept") | dict(
            zip(removed["id"], removed["reason"], strict=True)
        )
    assert got == expect
    report = pl.read_csv(tmp_path / "v2" / "cluster_report.tsv", separator="\t")
    previous = report.filter(pl.col("previous_version"))
    assert previous["kept_id"].fill_null("").to_list() == [""] * previous.height
    assert set(",".join(previous["removed_ids"]).split(",")) == {
        k for k, v in expect.items() if v == minhash.PREVIOUS_REASON
    }
    manifest = json.loads(Path(f"{out['dups'][0]}.json").read_text())
    assert [p["sha256"] for p in manifest["previous_indexes"]] == [sha256_file(index[0])]
    # Version 2's own index holds only signatures version 1 did not have: never the exact
    # copy's, always those of the 7 new texts (v2-pair-1 and the six v2-new).
    for path in (tmp_path / "v2" / "index").glob("*.minhash.index"):
        assert 7 <= json.loads(Path(f"{path}.json").read_text())["n_signatures"] <= 13


def test_previous_index_must_match_the_settings(first_run, tmp_path):
    work, out = first_run
    index = sorted(map(str, (work / "index").glob("*.minhash.index")))
    other = minhash.identity(minhash.parse_settings(SETTINGS | {"n_grams": 4}))
    with pytest.raises(CliError, match="previous index .*n_grams=5 \\(this run: 4\\)"):
        minhash.check_previous_index(index[0], other, 0)
    # spacy_cached gives spaCy's tokens: an index made with one serves the other
    minhash.check_previous_index(index[0], minhash.identity(minhash.parse_settings({})), 0)
    with pytest.raises(CliError, match="bucket 0, not 3"):
        minhash.check_previous_index(index[0], minhash.identity(minhash.parse_settings({})), 3)
    assert minhash.index_bucket("x/bucket_007/a.minhash.index") == 7
    assert minhash.index_bucket("results/n/v/minhash/index/12.minhash.index") == 12


def test_index_from_is_resolved_at_parse_time(first_run, tmp_path, monkeypatch):
    from cosmopedia import plan

    work, _ = first_run
    root = tmp_path / "results" / "demo" / "v1" / "minhash"
    shutil.copytree(work / "index", root / "index")
    monkeypatch.chdir(tmp_path)
    config = {"dataset": {"name": "demo", "version": "v2"}, "minhash": {"num_buckets": 14}}
    per_bucket = plan.minhash_previous_indexes(
        config | {"minhash": {"num_buckets": 14, "index_from": "results/demo/v1"}}
    )
    assert per_bucket[3] == ["results/demo/v1/minhash/index/3.minhash.index"]
    for bad, match in (("results/demo/v2", "own index"), ("results", "holds no MinHash index")):
        (tmp_path / "results" / "demo" / "v2" / "minhash" / "index").mkdir(
            parents=True, exist_ok=True
        )
        with pytest.raises(PlanError, match=match):
            plan.minhash_previous_indexes(
                config | {"minhash": {"num_buckets": 14, "index_from": bad}}
            )
    with pytest.raises(PlanError, match="exactly 13 buckets"):
        plan.minhash_previous_indexes(
            config | {"minhash": {"num_buckets": 13, "index_from": "results/demo/v1"}}
        )


# --- the cosmopedia-v0.1 preset: datatrove's MinHash of February 2024 ------------------------


def feb_2024_signature(text: str) -> list[list[int]] | None:
    """Cosmopedia v0.1's signature, from the algorithm of datatrove 9e3dc416 (Feb 2024) as
    notes/generation.md states it: MinhashConfig() (5-grams, 14 x 8, seed 1, 32-bit),
    sha1_hash32 of each shingle, RandomState permutations, on nltk.word_tokenize of the
    text simplified then (lowercase, whitespace collapsed, punctuation removed, NFD without
    combining marks)."""
    import hashlib
    import struct
    import unicodedata

    from nltk.tokenize import NLTKWordTokenizer

    text = " ".join(text.lower().strip().split())
    text = text.translate(str.maketrans("", "", minhash.PUNCTUATION_2024_02))
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    words = NLTKWordTokenizer().tokenize(text.strip())
    grams = [" ".join(words[i : i + 5]) for i in range(len(words) - 4)]
    if not grams:
        return None
    hashes = [struct.unpack("<I", hashlib.sha1(g.encode()).digest()[:4])[0] for g in grams]
    prime = (1 << 61) - 1
    gen = np.random.RandomState(1)
    a = gen.randint(1, prime, dtype=np.uint64, size=(1, 112))
    b = gen.randint(0, prime, dtype=np.uint64, size=(1, 112))
    phv = (np.array(hashes, dtype=np.uint64).reshape(-1, 1) * a + b) % prime
    sig = np.min(np.bitwise_and(phv, np.uint64(0xFFFFFFFF)), axis=0).astype(np.uint32)
    return [s.tolist() for s in np.split(sig, 14)]


def test_v01_preset_gives_the_february_2024_signatures(tmp_path):
    import struct

    config = settings.validate_config(
        {
            "dataset": {"name": "d", "version": "v"},
            "sources": {"s": {"family": "stories", "files": "x"}},
            "minhash": {"preset": "cosmopedia-v0.1"},
        }
    )
    v01 = {k: v for k, v in config["minhash"].items() if k not in ("preset", "index_from")}
    assert v01 == {
        "n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8, "seed": 1, "precision": 32,
        "hash_fc": "sha1", "normalization": "datatrove-2024-02", "tokenizer": "nltk",
    }  # fmt: skip
    texts = [
        TRICKY,
        "Café, naïve — \u201cquoted\u201d text: it's 2024! Numbers 12,345 stay; don't they?",
        "I cannot go, gonna wanna stay... The end.\nA new\tline of words here to hash",
        "too short",
    ]
    df = pl.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    write_parquet(df, tmp_path / "in.parquet")
    minhash.signature(tmp_path / "in.parquet", tmp_path / "sig", None, v01)
    got: dict[int, list[list[int]]] = {}
    for b in range(14):
        data = (tmp_path / "sig" / f"bucket_{b:03d}.sig").read_bytes()
        for rec in struct.iter_unpack("<8II", data):
            got.setdefault(rec[-1], []).append(list(rec[:-1]))
    expected = {i: feb_2024_signature(t) for i, t in enumerate(texts)}
    assert expected[3] is None and 3 not in got  # under 5 words: no signature, as then
    assert got == {i: sig for i, sig in expected.items() if sig is not None}
    # datatrove 0.10's defaults give other signatures for the same texts.
    minhash.signature(tmp_path / "in.parquet", tmp_path / "now", None, {"tokenizer": "spacy"})
    assert (tmp_path / "now" / "bucket_000.sig").read_bytes() != (
        tmp_path / "sig" / "bucket_000.sig"
    ).read_bytes()


def test_february_2024_punctuation_is_datatroves_with_tab_and_newline():
    from datatrove.utils.text import PUNCTUATION

    assert set(minhash.PUNCTUATION_2024_02) == set(PUNCTUATION) | {"\t", "\n"}


def test_nltk_tokenizer_needs_no_punkt_model_on_normalised_text():
    """nltk.word_tokenize splits sentences with Punkt first; Punkt breaks only after . ? !,
    which normalised text never holds: an untrained Punkt (no download) keeps it whole."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    norm = minhash.simplify_text_2024_02("Tides rise. Why? Because! The moon... pulls: 3.5 m")
    assert not set(".?!") & set(norm)
    assert PunktSentenceTokenizer().tokenize(norm) == [norm]
    assert minhash.NltkTokenizer().word_tokenize("i cannot stay gonna") == [
        "i", "can", "not", "stay", "gon", "na"
    ]  # fmt: skip
