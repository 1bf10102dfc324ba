rule dataset:
    input:
        plan=rules.shard_plan.output.plan,
        # Every stage's files: the manifest counts their rows.
        seeds=all_shards("seeds"),
        prompts=all_shards("prompts"),
        generations=all_shards("generations"),
        clean=all_shards("clean"),
        dedup=all_shards("dedup"),
        decontam=all_shards("decontam"),
        reports=all_shards("decontam_report"),
        dropped=all_shards("clean_dropped"),
        removed=all_shards("dedup_removed"),
        provenance=all_shards("generation_provenance"),
    output:
        data=directory(layout.global_path(ROOT, "dataset_data")),
        manifest=layout.global_path(ROOT, "manifest"),
        card=layout.global_path(ROOT, "card"),
        removed=layout.global_path(ROOT, "removed_rows"),
        summary=layout.global_path(ROOT, "summary"),
    log:
        f"{LOGS}/dataset.log",
    benchmark:
        f"{BENCHMARKS}/dataset.tsv"
    params:
        root=results_root,
        settings=settings(plan.dataset_settings(config, PROJECT_REVISION)),
    shell:
        "cosmopedia dataset --root {params.root:q} --plan {input.plan:q}"
        " --settings {params.settings:q} 2> {log:q}"
