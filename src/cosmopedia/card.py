"""The dataset card: README.md of a release, with Hugging Face YAML metadata.

One dataset config per source (its Parquet files under data/<config>/), features
matching the files, the license from the config, a stats table and the exact way to
reproduce and verify the release. Built from the manifest alone, so it never disagrees
with it. The card is itself a file of the release, covered by the manifest's root_sha256:
it shows the data files' root (data_root_sha256) and the config hash, never that root.
"""

from __future__ import annotations

import polars as pl
import yaml

# polars dtype -> Hugging Face `datasets` feature dtype.
FEATURE_DTYPES = {
    pl.String: "string",
    pl.Int64: "int64",
    pl.Int32: "int32",
    pl.Float64: "float64",
    pl.Boolean: "bool",
}

COLUMN_DOCS = {
    "prompt": "the prompt sent to the model",
    "text": "the generated text (clean.preset project: greeting openers and surrounding "
    "whitespace stripped; cosmopedia-v0.1: as generated)",
    "text_token_length": "tokens of the text: len(tokenizer.encode(text)) with the model's "
    "tokenizer (BOS included, as Cosmopedia), or the engine's count of generated tokens "
    "(manifest: text_token_length.counted_by)",
    "seed_data": "the seed source label (sources.<name>.seed_data: auto_math_text, ...)",
    "format": "Cosmopedia format label (textbook, blogpost, story_children, ...)",
    "audience": "Cosmopedia audience label",
    "seed_text": "the seed material the prompt was built from (extract, snippet, outline trail)",
    "id": "stable row id: <source>/<shard>/<row number in the seed file>",
    "source": "seed source name from the config",
    "seed": "sampling seed of this row's request: sha256(dataset version, id)",
    "finish_reason": "why generation stopped (eos_token, length, ...)",
}


def features(schema: pl.Schema) -> list[dict]:
    return [{"name": name, "dtype": FEATURE_DTYPES[dtype]} for name, dtype in schema.items()]


def card_metadata(manifest: dict, schema: pl.Schema) -> dict:
    by_config: dict[str, dict] = {}
    for entry in manifest["files"]:
        stats = by_config.setdefault(entry["config"], {"rows": 0, "bytes": 0, "tokens": 0})
        for key in ("rows", "bytes", "tokens"):
            stats[key] += entry[key]
    configs = sorted(by_config)
    return {
        "license": manifest["dataset"]["license"],
        "language": ["en"],
        "tags": ["synthetic", "cosmopedia"],
        "configs": [
            {"config_name": c, "data_files": [{"split": "train", "path": f"data/{c}/*/*.parquet"}]}
            for c in configs
        ],
        "dataset_info": [
            {
                "config_name": c,
                "features": features(schema),
                "splits": [
                    {
                        "name": "train",
                        "num_bytes": by_config[c]["bytes"],
                        "num_examples": by_config[c]["rows"],
                    }
                ],
            }
            for c in configs
        ],
    }, by_config


def dataset_card(manifest: dict, schema: pl.Schema) -> str:
    metadata, by_config = card_metadata(manifest, schema)
    name, version = manifest["dataset"]["name"], manifest["dataset"]["version"]
    removed = manifest["removed"]
    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name} {version}",
        "",
        "Synthetic texts (textbooks, blog posts, stories, tutorials) generated from seed "
        "samples by the Cosmopedia workflow, deduplicated with MinHash and decontaminated "
        "against evaluation benchmarks.",
        "",
        "## Contents",
        "",
        "| config | rows | tokens | files |",
        "|---|---|---|---|",
    ]
    for config in sorted(by_config):
        n_files = sum(1 for f in manifest["files"] if f["config"] == config)
        stats = by_config[config]
        lines.append(f"| {config} | {stats['rows']} | {stats['tokens']} | {n_files} |")
    lines += [
        f"| **total** | {manifest['totals']['rows']} | {manifest['totals']['tokens']} "
        f"| {len(manifest['files'])} |",
        "",
        "Rows per step: "
        + ", ".join(f"{k} {v}" for k, v in manifest["stage_rows"]["total"].items())
        + ".",
        "",
        "Removed rows by step and reason (all listed in `removed_rows.parquet`):",
        "",
    ]
    lines += [f"- {key}: {count}" for key, count in removed.items()] or ["- none"]
    lines += ["", "## Columns", ""]
    lines += [f"- `{c}`: {COLUMN_DOCS.get(c, '')}" for c in schema.names()]
    lines += [
        "",
        "## Reproduce and verify",
        "",
        "`manifest.json` lists every file of this release with its sha256 and bytes (data "
        "files also with rows and tokens), the row counts of every step, the resolved config "
        f"(sha256 `{manifest['config_sha256']}`), the project commit, package versions and "
        "the generation provenance of every shard. The data files' root hash is "
        f"`{manifest['data_root_sha256']}`: the sha256 of the lines "
        "`<sha256> <bytes> <path>` of the data files, sorted by path. The manifest's "
        "`root_sha256` covers every file, this card too, so it cannot be printed here. "
        "`SHA256SUMS` lists every file and the manifest.",
        "",
        "```bash",
        "sha256sum -c SHA256SUMS                                      # every file",
        "cosmopedia verify --manifest manifest.json --integrity-only  # files, roots, counts",
        "cosmopedia verify --manifest manifest.json                   # rebuild and compare",
        "```",
        "",
        "Every step after generation is bitwise reproducible. Generation is reproducible "
        "when cached generations are reused, and otherwise depends on the engine "
        f"(determinism recorded in the manifest: `{manifest.get('determinism', 'unknown')}`).",
        "",
    ]
    return "\n".join(lines)
