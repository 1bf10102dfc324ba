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
        seeds=out("seeds"),
        # Bad rows set aside (sources.<name>.on_bad_rows: quarantine) and their count.
        quarantine=out("seed_quarantine"),
    log:
        f"{LOGS}/ingest/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/ingest/{{source}}/{{shard}}.tsv"
    params:
        seed=ingest_seed,
        settings=ingest_settings,
        seed_sha256=ingest_fingerprint,
    shell:
        "cosmopedia ingest --input {params.seed:q} --output {output.seeds:q}"
        " --quarantine {output.quarantine:q} --shard {wildcards.shard}"
        " --settings {params.settings:q} 2> {log:q}"
