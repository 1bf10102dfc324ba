"""Report items of a finished run: plots and tables for `snakemake --report report.html`.

`cosmopedia report-plots` reads the outputs of the other steps (dataset files, MinHash
clusters, decontamination reports, removed rows, generation provenance and the jobs'
runtime files) and writes the SVG plots and HTML tables that the `report_plots` rule
flags with `report(...)`. The plots of data (token lengths, clusters, contamination,
failures) and both tables come out byte-identical for the same inputs: fixed SVG hash
salt, no date, bundled font, sorted rows. The plots of timings (throughput, start-up
times, rule runtimes, GPU-hours) and the GPU-hours table describe one run and differ from
run to run; none of these files is listed in the dataset manifest.

Tables show at most MAX_TABLE_ROWS rows per stage and reason (the Parquet files hold
them all), so the report stays small at Cosmopedia scale.
"""

from __future__ import annotations

import csv
import html
import logging
from collections import Counter, defaultdict
from pathlib import Path

from cosmopedia import accounting
from cosmopedia.accounting import ShardUsage
from cosmopedia.io import atomic_path, read_json
from cosmopedia.layout import global_path, shard_path

log = logging.getLogger("cosmopedia.report")

# name -> file name in the output folder (the rule's outputs use the same names).
FILES = {
    "token_lengths": "token_lengths.svg",
    "throughput": "generation_throughput.svg",
    "failures": "generation_failures.svg",
    "startup": "server_startup.svg",
    "cluster_sizes": "minhash_cluster_sizes.svg",
    "contamination": "contamination.svg",
    "runtimes": "rule_runtimes.svg",
    "gpu_hours": "generation_gpu_hours.svg",
    "removed_rows": "removed_rows.html",
    "contaminated_rows": "contaminated_rows.html",
    "gpu_hours_table": "generation_gpu_hours.html",
}
# Plots and tables of timings: different on every run.
RUN_DEPENDENT = ("throughput", "startup", "runtimes", "gpu_hours", "gpu_hours_table")
MAX_TABLE_ROWS = 100  # per (stage, reason) in the removed-rows table; per task in the other
EXCERPT_CHARS = 300
MANY_SHARDS = 40  # above this, per-shard plots show points instead of labelled bars
MAX_SHARD_ROWS = 500  # shards listed in the GPU-hours table (the most expensive ones)


# --- reading the run's files --------------------------------------------------------


def token_length_stats(root: str) -> dict:
    """Box-plot statistics of text_token_length per format and per audience.

    Computed by polars over every released file (no row list in memory, no outlier
    points in the plot: the box plot stays small at 30M rows). Quartiles interpolate
    linearly like numpy; whiskers reach the furthest value within 1.5 IQR of the box.
    """
    import polars as pl

    manifest = read_json(global_path(root, "manifest"))
    dataset_dir = global_path(root, "dataset_dir")
    files = sorted(f"{dataset_dir}/{entry['path']}" for entry in manifest["files"])
    out = {"rows": 0, "tokens": 0, "format": [], "audience": []}
    if not files:
        return out
    value = pl.col("text_token_length")
    rows = pl.scan_parquet(files).select("format", "audience", value)
    totals = rows.select(pl.len(), value.sum()).collect().row(0)
    out["rows"], out["tokens"] = totals[0], int(totals[1] or 0)
    for column in ("format", "audience"):
        boxes = (
            rows.group_by(column)
            .agg(
                pl.len().alias("n"),
                value.mean().alias("mean"),
                value.quantile(0.25, "linear").alias("q1"),
                value.median().alias("med"),
                value.quantile(0.75, "linear").alias("q3"),
            )
            .with_columns(
                (pl.col("q1") - 1.5 * (pl.col("q3") - pl.col("q1"))).alias("lo"),
                (pl.col("q3") + 1.5 * (pl.col("q3") - pl.col("q1"))).alias("hi"),
            )
        )
        whiskers = (
            rows.join(boxes.select(column, "lo", "hi"), on=column)
            .filter(value.is_between(pl.col("lo"), pl.col("hi")))
            .group_by(column)
            .agg(value.min().alias("whislo"), value.max().alias("whishi"))
        )
        table = boxes.join(whiskers, on=column).sort(column).collect()
        out[column] = [
            {
                "label": f"{r[column]} (n={r['n']})",
                **{k: float(r[k]) for k in ("mean", "q1", "med", "q3", "whislo", "whishi")},
                "fliers": [],
            }
            for r in table.to_dicts()
        ]
    return out


def provenances(root: str, plan: list[dict]) -> list[tuple[str, str, dict]]:
    """(shard key, source, provenance) of every shard, in plan order."""
    out = []
    for entry in plan:
        prov = read_json(shard_path(root, "generation_provenance", entry["source"], entry["shard"]))
        out.append((f"{entry['source']}/{entry['shard']}", entry["source"], prov))
    return out


def decontam_reports(root: str, plan: list[dict]):
    import polars as pl

    frames = [
        pl.read_parquet(shard_path(root, "decontam_report", e["source"], e["shard"])) for e in plan
    ]
    frames = [f for f in frames if f.height]
    if not frames:
        return None
    return pl.concat(frames, how="diagonal_relaxed").sort("id", "task_name", "item_id")


def job_runtimes(runtimes_dir: str) -> dict[str, list[float]]:
    """Wall-clock seconds of every job, by rule, from the jobs' benchmark files.

    runtimes/<rule>.tsv or runtimes/<rule>/.../<job>.tsv; a file holds one line per
    repeat (Snakemake's `repeat`) after its header.
    """
    runtimes: dict[str, list[float]] = defaultdict(list)
    base = Path(runtimes_dir)
    for path in sorted(base.rglob("*.tsv")):
        rel = path.relative_to(base)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                try:
                    runtimes[rule].append(float(row["s"]))
                except (KeyError, TypeError, ValueError):
                    continue
    return dict(sorted(runtimes.items()))


# --- plotting -------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.hashsalt": "cosmopedia",  # stable element ids
            "svg.fonttype": "path",
            "font.family": "DejaVu Sans",  # bundled with matplotlib: same glyphs everywhere
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def _save(fig, path: str) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None}
        )
    plt.close(fig)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _integer_y(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _source_colors(sources) -> dict[str, object]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(sorted(set(sources)))}


def plot_token_lengths(stats: dict, path: str) -> None:
    """Box plots of text_token_length per format and per audience."""
    plt = _pyplot()
    height = 1.5 + 0.3 * (len(stats["format"]) + len(stats["audience"]))
    fig, axes = plt.subplots(2, 1, figsize=(7.5, max(height, 4)), squeeze=True)
    for ax, column in zip(axes, ("format", "audience"), strict=True):
        if not stats[column]:
            _empty(ax, "no released rows")
            continue
        ax.bxp(stats[column], orientation="horizontal", showmeans=True, showfliers=False)
        ax.invert_yaxis()
        ax.set_title(f"Token length per {column}", loc="left")
        ax.set_xlabel("text_token_length (tokens)")
    fig.suptitle(f"Released rows: {stats['rows']}, tokens: {stats['tokens']}")
    fig.tight_layout()
    _save(fig, path)


def _per_shard(ax, keys, sources, values, ylabel: str) -> None:
    """One value per shard: labelled bars for a few shards, coloured points for many."""
    colors = _source_colors(sources)
    x = list(range(len(keys)))
    if len(keys) <= MANY_SHARDS:
        for source, color in colors.items():
            idx = [i for i, s in enumerate(sources) if s == source]
            ax.bar(idx, [values[i] for i in idx], color=color, label=source)
        ax.set_xticks(x, keys, rotation=60, ha="right")
    else:
        for source, color in colors.items():
            idx = [i for i, s in enumerate(sources) if s == source]
            ax.scatter(idx, [values[i] for i in idx], s=6, color=color, label=source)
        ax.set_xlabel("shard (plan order)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, title="source")
    ax.set_ylabel(ylabel)


def plot_throughput(provs, path: str) -> None:
    plt = _pyplot()
    keys, sources, rates = [], [], []
    total_tokens, total_s = 0, 0.0
    for key, source, prov in provs:
        seconds = float(prov.get("timings", {}).get("generation_s") or 0.0)
        tokens = int(prov.get("generated_tokens") or 0)
        keys.append(key)
        sources.append(source)
        rates.append(tokens / seconds if seconds > 0 else 0.0)
        total_tokens += tokens
        total_s += seconds
    fig, ax = plt.subplots(figsize=(7.5, 4))
    if keys:
        _per_shard(ax, keys, sources, rates, "generated tokens / s")
        overall = total_tokens / total_s if total_s > 0 else 0.0
        ax.set_title(
            f"Generation throughput per shard: {total_tokens} tokens in {total_s:.1f} s,\n"
            f"{overall:.0f} tokens/s per generation job on average",
            loc="left",
        )
    else:
        _empty(ax, "no shards")
    _save(fig, path)


def plot_startup(provs, path: str) -> None:
    plt = _pyplot()
    keys = [k for k, _, _ in provs]
    sources = [s for _, s, _ in provs]
    values = [float(p.get("timings", {}).get("startup_s") or 0.0) for _, _, p in provs]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    if keys:
        _per_shard(ax, keys, sources, values, "engine start-up (s)")
        ax.set_title(
            f"Inference server start-up per generation job (max {max(values):.1f} s)", loc="left"
        )
    else:
        _empty(ax, "no shards")
    _save(fig, path)


def plot_failures(provs, path: str) -> None:
    """Failed rows per shard, stacked by cause (the shards with the most failures)."""
    plt = _pyplot()
    per_shard = [(key, prov.get("failures_by_cause") or {}) for key, _, prov in provs]
    failing = [(k, c) for k, c in per_shard if sum(c.values())]
    totals = Counter()
    for _, causes in failing:
        totals.update(causes)
    shown = sorted(failing, key=lambda kc: (-sum(kc[1].values()), kc[0]))[:MANY_SHARDS]
    fig, ax = plt.subplots(figsize=(7.5, max(3, 1.2 + 0.25 * len(shown))))
    if not shown:
        _empty(ax, f"no failed rows in {len(per_shard)} shards")
        ax.set_title("Generation failures per shard", loc="left")
    else:
        causes = sorted(totals)
        colors = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(causes)}
        y = list(range(len(shown)))
        left = [0] * len(shown)
        for cause in causes:
            widths = [c.get(cause, 0) for _, c in shown]
            ax.barh(y, widths, left=left, color=colors[cause], label=f"{cause} ({totals[cause]})")
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_yticks(y, [k for k, _ in shown])
        ax.invert_yaxis()
        ax.set_xlabel("failed rows")
        ax.legend(loc="lower right", fontsize=7)
        more = f", top {len(shown)} of {len(failing)} shards" if len(failing) > len(shown) else ""
        ax.set_title(
            f"Generation failures by cause ({sum(totals.values())} rows{more})", loc="left"
        )
    _save(fig, path)


def plot_cluster_sizes(clusters, path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    if clusters.height == 0:
        _empty(ax, "no near-duplicate clusters")
        ax.set_title("MinHash clusters", loc="left")
    else:
        sizes = clusters.unique("cluster_id").group_by("cluster_size").len().sort("cluster_size")
        x = list(range(sizes.height))
        ax.bar(x, sizes["len"].to_list(), color="#4c72b0")
        ax.set_xticks(x, [str(v) for v in sizes["cluster_size"].to_list()])
        ax.set_xlabel("documents in the cluster")
        ax.set_ylabel("clusters")
        _integer_y(ax)
        if sizes["len"].max() > 100:
            ax.set_yscale("log")
        removed = int((~clusters["kept"]).sum())
        ax.set_title(
            f"MinHash near-duplicate clusters: {sizes['len'].sum()} clusters, "
            f"{clusters.height} documents, {removed} removed",
            loc="left",
        )
    _save(fig, path)


def plot_contamination(reports, path: str) -> None:
    """Candidate, confirmed and removed rows per benchmark task."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    if reports is None:
        _empty(ax, "no benchmark overlap found")
        ax.set_title("Contamination hits per benchmark", loc="left")
    else:
        import polars as pl

        per_task = (
            reports.group_by("task_name")
            .agg(
                pl.col("id").n_unique().alias("candidates"),
                pl.col("id").filter(pl.col("confirmed")).n_unique().alias("confirmed"),
                pl.col("id").filter(pl.col("removed")).n_unique().alias("removed"),
            )
            .sort("task_name")
        )
        tasks = per_task["task_name"].to_list()
        removed = reports.filter(pl.col("removed"))["id"].n_unique()
        width = 0.27
        for i, column in enumerate(("candidates", "confirmed", "removed")):
            x = [t + (i - 1) * width for t in range(len(tasks))]
            ax.bar(x, per_task[column].to_list(), width=width, label=column)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_xlim(-0.75, max(len(tasks), 3) - 0.25)
        _integer_y(ax)
        ax.set_ylabel("generated rows")
        ax.legend(fontsize=7)
        ax.set_title(
            f"Contamination hits per benchmark ({removed} rows removed)",
            loc="left",
        )
    _save(fig, path)


def plot_runtimes(runtimes: dict[str, list[float]], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, max(3, 1 + 0.35 * len(runtimes))))
    if not runtimes:
        _empty(ax, "no runtime files")
    else:
        labels = [
            f"{rule} (n={len(v)}, {sum(v) / 3600:.2f} h)" if sum(v) >= 360 else
            f"{rule} (n={len(v)}, {sum(v):.0f} s)"
            for rule, v in runtimes.items()
        ]  # fmt: skip
        ax.boxplot(
            list(runtimes.values()), orientation="horizontal", tick_labels=labels, showmeans=True
        )
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("job wall-clock time (s, from the runtime files)")
    ax.set_title("Runtime per rule", loc="left")
    _save(fig, path)


def plot_gpu_hours(usages: list[ShardUsage], path: str) -> None:
    """Hours per source, stacked: start-up, stream before the drain, drain, the rest of
    the job (GPU-hours; engine-hours for engines without GPUs, labelled as such)."""
    plt = _pyplot()
    sources = sorted({u.source for u in usages})
    groups = [
        (s, t) for s in sources for t in accounting.totals(u for u in usages if u.source == s)
    ]
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 1.2 + 0.35 * len(groups))))
    if not groups:
        _empty(ax, "no generated shards")
        ax.set_title("Generation GPU-hours", loc="left")
        _save(fig, path)
        return
    parts = {
        "start-up": lambda t: t.startup_hours,
        "stream before the drain": lambda t: t.steady_hours,
        "drain": lambda t: t.drain_hours,
        "rest of the job": lambda t: t.other_hours,
    }
    colors = dict(zip(parts, ("#c44e52", "#4c72b0", "#dd8452", "#999999"), strict=True))
    y = list(range(len(groups)))
    left = [0.0] * len(groups)
    for name, value in parts.items():
        widths = [value(t) for _, t in groups]
        ax.barh(y, widths, left=left, color=colors[name], label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    labels = [
        f"{s} ({'GPU-h' if t.unit == accounting.GPU else 'engine-h, ' + ', '.join(t.engines)}, "
        f"overhead {accounting.fmt_share(t.overhead_share)})"
        for s, t in groups
    ]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    units = {t.unit for _, t in groups}
    ax.set_xlabel(
        "GPU-hours (GPUs x job wall time)"
        if units == {accounting.GPU}
        else "engine-hours (job wall time; no GPUs)"
        if units == {accounting.ENGINE}
        else "GPU-hours; engine-hours for engines without GPUs"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    total = "; ".join(
        f"{accounting.fmt_hours(t.hours)} {accounting.unit_label(t.unit, t.engines)}, "
        f"overhead {accounting.fmt_share(t.overhead_share)}"
        for t in accounting.totals(usages)
    )
    ax.set_title(f"Generation cost per source: {total}", loc="left")
    _save(fig, path)


# --- tables ----------------------------------------------------------------------------

TABLE_CSS = """
body{font-family:sans-serif;font-size:13px;margin:12px}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f0f0f0;position:sticky;top:0}
td.text{white-space:pre-wrap;font-family:monospace;font-size:12px;max-width:60em}
"""


def _excerpt(value) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + " …"


def html_table(
    title: str, intro: list[str], columns: list[str], rows: list[list], text_columns=()
) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column, value in zip(columns, row, strict=True):
            cls = ' class="text"' if column in text_columns else ""
            cells.append(f"<td{cls}>{html.escape('' if value is None else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in intro)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{TABLE_CSS}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>{paragraphs}"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
        "</body></html>\n"
    )


def _write_text(text: str, path: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _shard_of(row_id: str) -> tuple[str, str]:
    source, shard, _ = row_id.split("/", 2)
    return source, shard


def removed_table(root: str, clusters, reports) -> str:
    """Removed rows (first MAX_TABLE_ROWS per stage and reason) with a text excerpt."""
    import polars as pl

    removed = pl.read_parquet(global_path(root, "removed_rows")).sort("stage", "reason", "id")
    counts = removed.group_by("stage", "reason").len().sort("stage", "reason").rows()
    shown = removed.group_by("stage", "reason", maintain_order=True).head(MAX_TABLE_ROWS)

    # Text of the shown rows: from the shard file of the stage that removed them.
    texts: dict[str, str] = {}
    stage_files = {"clean": "clean_dropped", "dedup": "dedup_removed"}
    wanted: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for row_id, stage in shown.select("id", "stage").rows():
        if stage in stage_files:
            wanted[(stage_files[stage], *_shard_of(row_id))].add(row_id)
    for (file_stage, source, shard), ids in sorted(wanted.items()):
        df = pl.read_parquet(shard_path(root, file_stage, source, shard), columns=["id", "text"])
        texts.update(df.filter(pl.col("id").is_in(sorted(ids))).rows())
    if reports is not None:  # decontaminated rows: the text that matched the benchmark item
        best = reports.filter(pl.col("removed")).sort("id", "ratio", descending=[False, True])
        for row_id, matched in best.unique("id", keep="first").select("id", "matched").rows():
            texts.setdefault(row_id, matched)
    kept_of = {}
    if clusters.height:
        kept = clusters.filter(pl.col("kept")).select("cluster_id", pl.col("id").alias("kept_id"))
        kept_of = dict(clusters.join(kept, on="cluster_id").select("id", "kept_id").rows())

    rows = []
    for row_id, source, stage, reason, detail in shown.select(
        "id", "source", "stage", "reason", "detail"
    ).rows():
        note = detail or ""
        if stage == "dedup" and row_id in kept_of:
            note = f"near-duplicate of {kept_of[row_id]}" + (f"; {note}" if note else "")
        rows.append([stage, reason, row_id, source, note, _excerpt(texts.get(row_id))])
    intro = [
        f"{removed.height} rows removed: "
        + (", ".join(f"{s}/{r} {n}" for s, r, n in counts) or "none")
        + ".",
        f"Shown: the first {MAX_TABLE_ROWS} rows (by id) of each stage and reason; all of them "
        "are in dataset/removed_rows.parquet. Text: the generated text (clean, dedup) or the "
        "part that matched a benchmark item (decontaminate).",
    ]
    return html_table(
        "Removed rows",
        intro,
        ["stage", "reason", "id", "source", "detail", "text"],
        rows,
        text_columns=("text",),
    )


def contamination_table(reports) -> str:
    import polars as pl

    columns = ["task_name", "id", "item_id", "ratio", "confirmed", "best", "removed", "matched"]
    if reports is None:
        return html_table(
            "Contamination candidates",
            ["No generated row shares an n-gram with a benchmark item."],
            columns,
            [],
        )
    ordered = reports.sort(
        ["removed", "task_name", "ratio", "id", "item_id"],
        descending=[True, False, True, False, False],
    )
    shown = ordered.group_by("task_name", "removed", maintain_order=True).head(MAX_TABLE_ROWS)
    rows = [
        [r["task_name"], r["id"], r["item_id"], f"{r['ratio']:.4f}", r["confirmed"], r["best"],
         r["removed"], _excerpt(r["matched"])]
        for r in shown.select(columns).to_dicts()
    ]  # fmt: skip
    per_task = (
        reports.group_by("task_name")
        .agg(
            pl.len().alias("pairs"),
            pl.col("id").filter(pl.col("removed")).n_unique().alias("removed"),
        )
        .sort("task_name")
    )
    intro = [
        "Rows sharing an n-gram with a benchmark item, verified with difflib (ratio); rows "
        "whose best match reaches the threshold are removed. Per task: "
        + ", ".join(f"{t} {p} pairs, {r} rows removed" for t, p, r in per_task.rows())
        + ".",
        f"Shown: removed rows first, at most {MAX_TABLE_ROWS} per task and outcome; all pairs "
        "are in decontam/<source>/<shard>/report.parquet.",
    ]
    return html_table("Contamination candidates", intro, columns, rows, text_columns=("matched",))


GPU_HOURS_COLUMNS = [
    "level", "name", "engine", "GPUs", "hours", "unit", "start-up (h)", "drain (h)",
    "overhead", "job (s)", "start-up (s)", "stream (s)", "drain (s)", "rows generated",
    "tokens generated", "tokens/s", "per",
]  # fmt: skip


def _usage_row(level: str, name: str, u: ShardUsage) -> list:
    rate = u.tokens_per_s
    return [
        level, name, u.engine, u.gpus, accounting.fmt_hours(u.hours),
        accounting.unit_label(u.unit, [u.engine]), accounting.fmt_hours(u.startup_hours),
        "n/a" if u.drain_s is None else accounting.fmt_hours(u.drain_hours),
        accounting.fmt_share(u.overhead_share), f"{u.job_s:.1f}", f"{u.startup_s:.1f}",
        f"{u.generation_s:.1f}", "n/a" if u.drain_s is None else f"{u.drain_s:.1f}",
        u.run_rows, u.run_tokens, "" if rate is None else f"{rate:.1f}",
        accounting.rate_label(u.unit).removeprefix("tokens/s "),
    ]  # fmt: skip


def _totals_row(level: str, name: str, t: accounting.Totals) -> list:
    rate = t.tokens_per_s
    return [
        level, name, ", ".join(t.engines), "/".join(map(str, t.gpus)),
        accounting.fmt_hours(t.hours), accounting.unit_label(t.unit, t.engines),
        accounting.fmt_hours(t.startup_hours),
        accounting.fmt_hours(t.drain_hours) if t.drain_known else "n/a",
        accounting.fmt_share(t.overhead_share),
        *(f"{t.mean(name):.1f}" for name in ("job_s", "startup_s", "generation_s", "drain_s")),
        t.run_rows, t.run_tokens, "" if rate is None else f"{rate:.1f}",
        accounting.rate_label(t.unit).removeprefix("tokens/s "),
    ]  # fmt: skip


def gpu_hours_table(usages: list[ShardUsage]) -> str:
    """GPU-hours (engine-hours), start-up, drain and overhead: total, per source, per shard."""
    rows = [_totals_row("total", "total", t) for t in accounting.totals(usages)]
    for source in sorted({u.source for u in usages}):
        rows += [
            _totals_row("source", source, t)
            for t in accounting.totals(u for u in usages if u.source == source)
        ]
    shown = usages
    if len(usages) > MAX_SHARD_ROWS:
        shown = sorted(usages, key=lambda u: (-u.hours, u.key))[:MAX_SHARD_ROWS]
    rows += [_usage_row("shard", u.key, u) for u in shown]
    intro = [
        "What generation cost, from each shard's generations/<source>/<shard>/provenance.json. "
        "GPU-hours = GPUs the job held x its wall time (timings.job_s); an engine without "
        "GPUs (dummy, endpoint, CPU engines) is counted in engine-hours of job wall time, "
        "labelled with its kind. Start-up: servers started until ready. Drain: the stream's "
        "tail with fewer requests in flight than the concurrency. Overhead = (start-up + "
        "drain) / job time. tokens/s: tokens generated by the job per second of stream, per "
        "GPU (per job without GPUs). Seconds: the shard's, or the mean per job in the total "
        "and source rows. Rows reused from a checkpoint are not counted; the time of a killed "
        "attempt is not recorded.",
        f"Shown: totals, every source, and {len(shown)} of {len(usages)} shards"
        + (" (the most expensive)." if len(shown) < len(usages) else "."),
    ]
    return html_table("Generation GPU-hours and overhead", intro, GPU_HOURS_COLUMNS, rows)


# --- command ---------------------------------------------------------------------------


def make_all(root: str, plan: list[dict], runtimes_dir: str, out_dir: str) -> dict[str, str]:
    import polars as pl

    paths = {name: str(Path(out_dir) / file) for name, file in FILES.items()}
    clusters = pl.read_parquet(global_path(root, "clusters"))
    reports = decontam_reports(root, plan)
    provs = provenances(root, plan)

    plot_token_lengths(token_length_stats(root), paths["token_lengths"])
    plot_throughput(provs, paths["throughput"])
    plot_failures(provs, paths["failures"])
    plot_startup(provs, paths["startup"])
    plot_cluster_sizes(clusters, paths["cluster_sizes"])
    plot_contamination(reports, paths["contamination"])
    plot_runtimes(job_runtimes(runtimes_dir), paths["runtimes"])
    usages = [accounting.shard_usage(key, source, prov) for key, source, prov in provs]
    plot_gpu_hours(usages, paths["gpu_hours"])
    _write_text(gpu_hours_table(usages), paths["gpu_hours_table"])
    _write_text(removed_table(root, clusters, reports), paths["removed_rows"])
    _write_text(contamination_table(reports), paths["contaminated_rows"])
    return paths


def add_arguments(name, parser):
    parser.add_argument("--plan", required=True, help="shard plan (<root>/plan/shards.json)")
    parser.add_argument("--root", help="results root (default: the plan's, results/<name>/<v>)")
    parser.add_argument(
        "--runtimes", required=True, help="folder of the jobs' runtime files (benchmark:)"
    )
    parser.add_argument("--out-dir", required=True, help=f"folder for {', '.join(FILES.values())}")


def main(args) -> int:
    from cosmopedia.plan import read_plan

    root, plan = read_plan(args.plan, args.root)
    paths = make_all(root, plan, args.runtimes, args.out_dir)
    log.info("wrote %d report items to %s", len(paths), args.out_dir)
    return 0
