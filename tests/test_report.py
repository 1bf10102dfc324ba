"""`snakemake --report` on a finished demo run: one self-contained HTML file with every
plot and table of the report_plots rule, their captions and the rule graph."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import DEMO_ROOT, REPO, run_snakemake
from cosmopedia import report

pytestmark = pytest.mark.e2e


def caption_start(name: str) -> str:
    """The first words of an item's caption (workflow/report/<name>.rst)."""
    text = (REPO / "workflow" / "report" / f"{name}.rst").read_text(encoding="utf-8")
    words = []
    for word in text.split()[:5]:
        if not re.fullmatch(r"[A-Za-z-]+", word):  # stop before markup and punctuation
            break
        words.append(word)
    assert len(words) >= 2, f"caption {name}.rst starts with markup"
    return " ".join(words)


def test_report_has_every_plot_table_caption_and_the_rule_graph(demo_run, tmp_path):
    out = tmp_path / "report.html"
    run_snakemake(demo_run, "--report", str(out))
    html = out.read_text(encoding="utf-8")
    for name, file in report.FILES.items():
        assert (demo_run / DEMO_ROOT / "report" / file).stat().st_size > 0
        mime = "image/svg+xml" if file.endswith(".svg") else "text/html"
        # Embedded, not linked: the report is one file.
        assert f"data:{mime};charset=utf8;filename={file};base64," in html, file
        assert caption_start(name) in html, name
    assert "rulegraph_spec" in html
    for rule in ("generate", "minhash_cluster", "decontaminate", "dataset", "report_plots"):
        assert f'"rule": "{rule}"' in html  # a node of the rule graph


def test_data_plots_and_tables_are_byte_identical_on_a_rerun(demo_run, tmp_path):
    """Same inputs, same bytes, except the plots of timings (RUN_DEPENDENT)."""
    root = str(demo_run / DEMO_ROOT)
    plan = json.loads((demo_run / DEMO_ROOT / "plan/shards.json").read_text())["shards"]
    paths = report.make_all(root, plan, f"{root}/runtimes", str(tmp_path))
    for name, path in paths.items():
        if name in report.RUN_DEPENDENT:
            continue
        made_by_workflow = demo_run / DEMO_ROOT / "report" / report.FILES[name]
        assert made_by_workflow.read_bytes() == Path(path).read_bytes(), name


def test_removed_rows_table_shows_the_planted_rows_with_their_text(demo_run):
    table = (demo_run / DEMO_ROOT / "report" / report.FILES["removed_rows"]).read_text()
    contaminated = (demo_run / DEMO_ROOT / "report" / report.FILES["contaminated_rows"]).read_text()
    assert "web/web-00001/0000009" in table and "web/web-00001/0000009" in contaminated
    assert "near-duplicate of web/web-00000/0000010" in table
    assert "a student places a metal spoon" in contaminated  # the matched benchmark text


def test_many_shards_and_failures_plot(tmp_path):
    """The per-shard plots switch to points past MANY_SHARDS; failures stack by cause."""
    provs = [
        (
            f"web/web-{i:05d}",
            "web" if i % 2 else "stories",
            {
                "generated_tokens": 1000 + i,
                "timings": {"generation_s": 1.0 + i % 7, "startup_s": 0.5 + i % 3},
                "failures_by_cause": {"timeout": i % 4, "http_503": i % 3},
            },
        )
        for i in range(report.MANY_SHARDS * 3)
    ]
    for plot, name in ((report.plot_throughput, "t"), (report.plot_failures, "f")):
        plot(provs, str(tmp_path / f"{name}.svg"))
        assert (tmp_path / f"{name}.svg").read_text().startswith("<?xml")
    assert "<!-- timeout (" in (tmp_path / "f.svg").read_text()  # legend: cause (total)


def test_a_failed_step_ends_its_log_with_what_to_do(tmp_path, capsys):
    from cosmopedia import cli

    plan = tmp_path / "results/x/v1/plan/shards.json"
    argv = ["report-plots", "--plan", str(plan), "--runtimes", str(tmp_path), "--out-dir", "o"]
    assert cli.main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("cosmopedia report-plots failed: [Errno 2] No such file")
    assert last.endswith("Fix the input/config and rerun snakemake; finished work is kept.")
