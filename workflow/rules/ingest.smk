rule shard_plan:
    output:
        plan=layout.global_path(ROOT, "plan"),
    params:
        shards=shard_plan_entries(),
    log:
        f"{LOGS}/shard_plan.log",
    run:
        from cosmopedia.io import write_json

        write_json({"shards": params.shards}, output.plan)


rule ingest:
    input:
        seed_file,
    output:
        seeds=out("seeds"),
    params:
        settings=ingest_settings,
        seed_sha256=seed_sha256,
    log:
        f"{LOGS}/ingest/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/ingest/{{source}}/{{shard}}.tsv"
    shell:
        "cosmopedia ingest --input {input:q} --output {output.seeds:q} --shard {wildcards.shard}"
        " --settings {params.settings:q} 2> {log:q}"
