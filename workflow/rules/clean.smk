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
        settings=settings(plan.clean_settings(config)),
    shell:
        "cosmopedia clean --input {input.generations:q}/generations.parquet"
        " --output {output.clean:q}/kept.parquet --dropped {output.clean:q}/dropped.parquet"
        " --settings {params.settings:q} 2> {log:q}"
