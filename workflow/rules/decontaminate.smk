rule decontaminate:
    input:
        dedup=rules.minhash_filter.output.kept,
        benchmarks=plan.benchmark_files(config),
    output:
        kept=out("decontam"),
        report=out("decontam_report"),
    params:
        settings=settings(plan.decontam_settings(config)),
    log:
        f"{LOGS}/decontaminate/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/decontaminate/{{source}}/{{shard}}.tsv"
    shell:
        "cosmopedia decontaminate --input {input.dedup:q} --benchmarks {input.benchmarks:q}"
        " --output {output.kept:q} --report {output.report:q}"
        " --settings {params.settings:q} 2> {log:q}"
