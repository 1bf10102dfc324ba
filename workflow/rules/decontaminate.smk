# Decontamination with Cosmopedia's method (10-gram candidates verified with difflib).
# The benchmark items are prepared once per version (Hub benchmarks are downloaded once
# per pinned revision into resources/), with their N-gram index; every shard job loads it.
from cosmopedia.benchmarks import HUB as HUB_BENCHMARKS
from cosmopedia.benchmarks import resolve_entries

try:
    BENCHMARK_INPUTS = resolve_entries(config["decontamination"]["benchmarks"])
except CliError as exc:
    raise WorkflowError(f"config: decontamination.benchmarks: {exc}") from None


rule benchmark_download:
    output:
        layout.cache_path("hub_benchmark", name="{benchmark}", revision="{revision}"),
    log:
        f"{LOGS}/benchmark_download/{{benchmark}}/{{revision}}.log",
    wildcard_constraints:
        benchmark="|".join(HUB_BENCHMARKS),
        revision="[0-9a-f]{40}",
    shell:
        "cosmopedia benchmarks-download --name {wildcards.benchmark}"
        " --revision {wildcards.revision} --output {output:q} 2> {log:q}"


rule benchmarks:
    input:
        BENCHMARK_INPUTS,
    output:
        prepared=layout.global_path(ROOT, "benchmark_items"),
        index=layout.global_path(ROOT, "benchmark_index"),
    log:
        f"{LOGS}/benchmarks.log",
    benchmark:
        f"{RUNTIMES}/benchmarks.tsv"
    params:
        settings=BENCHMARKS_SETTINGS,
    shell:
        "cosmopedia benchmarks --inputs {input:q} --output {output.prepared:q}"
        " --index {output.index:q} --settings {params.settings:q} 2> {log:q}"


rule decontaminate:
    input:
        dedup=rules.minhash_filter.output.dedup,
        prepared=rules.benchmarks.output.prepared,
        index=rules.benchmarks.output.index,
    output:
        # kept.parquet and report.parquet (every candidate match, removed or not).
        decontam=out_folder("decontam"),
    log:
        f"{LOGS}/decontaminate/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/decontaminate/{{source}}/{{shard}}.tsv"
    params:
        settings=DECONTAM_SETTINGS,
    shell:
        f"cosmopedia decontaminate --input {{input.dedup:q}}/{FOLDER_FILES['dedup']}"
        " --benchmarks {input.prepared:q} --index {input.index:q}"
        f" --output {{output.decontam:q}}/{FOLDER_FILES['decontam']}"
        f" --report {{output.decontam:q}}/{FOLDER_FILES['decontam_report']}"
        " --settings {params.settings:q} 2> {log:q}"


rule decontam_summary:
    input:
        plan=rules.shard_plan.output.plan,
        decontam=all_shards("decontam"),
        prepared=rules.benchmarks.output.prepared,
    output:
        summary=report(
            layout.global_path(ROOT, "decontam_summary"),
            category="Decontamination",
            caption="../report/decontam_summary.rst",
        ),
    log:
        f"{LOGS}/decontam_summary.log",
    benchmark:
        f"{RUNTIMES}/decontam_summary.tsv"
    params:
        root=results_root,
    shell:
        "cosmopedia decontam-summary --plan {input.plan:q} --root {params.root:q}"
        " --benchmarks {input.prepared:q}"
        " --output {output.summary:q} 2> {log:q}"
