# The GPU step. Cluster resources (partition, GPUs, runtime) are set per cluster in
# profiles/<cluster>/config.yaml; the engine and sampling settings come from config.
rule generate:
    input:
        prompts=rules.prompts.output.prompts,
    output:
        generations=out("generations"),
        provenance=out("generation_provenance"),
    params:
        settings=settings(plan.generate_settings(config)),
        checkpoint=out("generation_checkpoint"),
    log:
        client=f"{LOGS}/generate/{{source}}/{{shard}}.log",
        engine=f"{LOGS}/generate/{{source}}/{{shard}}.engine.log",
    benchmark:
        f"{BENCHMARKS}/generate/{{source}}/{{shard}}.tsv"
    shell:
        "cosmopedia generate --prompts {input.prompts:q} --output {output.generations:q}"
        " --provenance {output.provenance:q} --checkpoint {params.checkpoint:q}"
        " --engine-log {log.engine:q} --settings {params.settings:q} 2> {log.client:q}"
