# The shard plan is a small JSON file: not worth a cluster job.
localrules:
    shard_plan,


rule shard_plan:
    output:
        plan=layout.global_path(ROOT, "plan"),
    log:
        f"{LOGS}/shard_plan.log",
    params:
        shards=shard_plan_entries(),
    run:
        from cosmopedia.io import write_json

        write_json({"shards": params.shards}, output.plan)


rule ingest:
    input:
        ingest_input,
    output:
        # Rows read and kept, and the bad rows set aside (sources.<name>.on_bad_rows:
        # quarantine), are in its Parquet metadata (`cosmopedia metadata FILE`).
        seeds=out("seeds"),
    log:
        f"{LOGS}/ingest/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/ingest/{{source}}/{{shard}}.tsv"
    params:
        # The seed file (a path or hf:// reference) and its sha256 are in the settings.
        settings=ingest_settings,
    shell:
        "cosmopedia ingest --output {output.seeds:q} --shard {wildcards.shard}"
        " --settings {params.settings:q} 2> {log:q}"
