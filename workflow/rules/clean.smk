rule clean:
    input:
        generations=rules.generate.output.generations,
    output:
        kept=out("clean"),
        dropped=out("clean_dropped"),
    log:
        f"{LOGS}/clean/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/clean/{{source}}/{{shard}}.tsv"
    params:
        settings=settings(plan.clean_settings(config)),
    shell:
        "cosmopedia clean --input {input.generations:q} --output {output.kept:q}"
        " --dropped {output.dropped:q} --settings {params.settings:q} 2> {log:q}"
