rule clean:
    input:
        generations=rules.generate.output.generations,
    output:
        # kept.parquet and dropped.parquet (with the reason per row).
        clean=out_folder("clean"),
    log:
        f"{LOGS}/clean/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/clean/{{source}}/{{shard}}.tsv"
    params:
        generations=out("generations"),
        kept=out("clean"),
        dropped=out("clean_dropped"),
        settings=settings(plan.clean_settings(config)),
    shell:
        "cosmopedia clean --input {params.generations:q} --output {params.kept:q}"
        " --dropped {params.dropped:q} --settings {params.settings:q} 2> {log:q}"
