# Plots and tables for `snakemake --report report.html` (one self-contained HTML file).
# The command reads the finished run's files through the plan and the layout, so its
# command line stays short at any number of shards; the manifest stands for every
# per-shard file behind it (see the dataset rule). Timing plots (throughput, start-up,
# runtimes, GPU-hours) and the GPU-hours table differ from run to run; no report file is
# listed in the dataset manifest.
from cosmopedia.report import FILES as REPORT_FILES

REPORT_DIR = layout.global_path(ROOT, "report_dir")


rule report_plots:
    input:
        plan=layout.global_path(ROOT, "plan"),
        manifest=layout.global_path(ROOT, "manifest"),
        removed=layout.global_path(ROOT, "removed_rows"),
        clusters=layout.global_path(ROOT, "clusters"),
    output:
        token_lengths=report(
            f"{REPORT_DIR}/{REPORT_FILES['token_lengths']}",
            caption="../report/token_lengths.rst",
            category="Dataset",
            labels={"item": "token length per format and audience", "type": "plot"},
        ),
        removed_rows=report(
            f"{REPORT_DIR}/{REPORT_FILES['removed_rows']}",
            caption="../report/removed_rows.rst",
            category="Dataset",
            labels={"item": "removed rows with text", "type": "table"},
        ),
        throughput=report(
            f"{REPORT_DIR}/{REPORT_FILES['throughput']}",
            caption="../report/throughput.rst",
            category="Generation",
            labels={"item": "throughput per shard", "type": "plot"},
        ),
        failures=report(
            f"{REPORT_DIR}/{REPORT_FILES['failures']}",
            caption="../report/failures.rst",
            category="Generation",
            labels={"item": "failures per shard and cause", "type": "plot"},
        ),
        startup=report(
            f"{REPORT_DIR}/{REPORT_FILES['startup']}",
            caption="../report/startup.rst",
            category="Generation",
            labels={"item": "server start-up per job", "type": "plot"},
        ),
        gpu_hours=report(
            f"{REPORT_DIR}/{REPORT_FILES['gpu_hours']}",
            caption="../report/gpu_hours.rst",
            category="Generation",
            labels={"item": "GPU-hours and overhead per source", "type": "plot"},
        ),
        gpu_hours_table=report(
            f"{REPORT_DIR}/{REPORT_FILES['gpu_hours_table']}",
            caption="../report/gpu_hours_table.rst",
            category="Generation",
            labels={"item": "GPU-hours and overhead per shard", "type": "table"},
        ),
        cluster_sizes=report(
            f"{REPORT_DIR}/{REPORT_FILES['cluster_sizes']}",
            caption="../report/cluster_sizes.rst",
            category="Deduplication",
            labels={"item": "MinHash cluster sizes", "type": "plot"},
        ),
        contamination=report(
            f"{REPORT_DIR}/{REPORT_FILES['contamination']}",
            caption="../report/contamination.rst",
            category="Decontamination",
            labels={"item": "hits per benchmark", "type": "plot"},
        ),
        contaminated_rows=report(
            f"{REPORT_DIR}/{REPORT_FILES['contaminated_rows']}",
            caption="../report/contaminated_rows.rst",
            category="Decontamination",
            labels={"item": "contaminated rows with matched text", "type": "table"},
        ),
        runtimes=report(
            f"{REPORT_DIR}/{REPORT_FILES['runtimes']}",
            caption="../report/runtimes.rst",
            category="Runtimes",
            labels={"item": "runtime per rule", "type": "plot"},
        ),
    log:
        f"{LOGS}/report_plots.log",
    benchmark:
        f"{RUNTIMES}/report_plots.tsv"
    params:
        runtimes=RUNTIMES,
        out_dir=report_dir,
    shell:
        "cosmopedia report-plots --plan {input.plan:q} --runtimes {params.runtimes:q}"
        " --out-dir {params.out_dir:q} 2> {log:q}"
