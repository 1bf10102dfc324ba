rule prompts:
    input:
        seeds=rules.ingest.output.seeds,
    output:
        prompts=out("prompts"),
    log:
        f"{LOGS}/prompts/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/prompts/{{source}}/{{shard}}.tsv"
    params:
        settings=prompts_settings,
    shell:
        "cosmopedia prompts --input {input.seeds:q} --output {output.prompts:q}"
        " --settings {params.settings:q} 2> {log:q}"
