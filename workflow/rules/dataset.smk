# The dataset and report steps read every stage's per-shard files through the plan and
# the layout. Their inputs name only the last stage: the chain of jobs behind it is in
# the DAG anyway, and Snakemake reruns a job there when its output (a file, or a step's
# folder of kept and dropped/removed rows) is missing. A file deleted inside a folder is
# not: the step that reads it fails naming it (remove the folder to have it rebuilt).
# Listing every stage's 3,000 files here made planning at Cosmopedia scale markedly
# slower for no extra guarantee (bench/dag.py).
# The step writes the whole release folder (dataset/) and seals it: every file in it is
# in the manifest. Its data/ folder is therefore not a directory() output, whose
# .snakemake_timestamp marker Snakemake would add to the release after sealing.
rule dataset:
    input:
        plan=rules.shard_plan.output.plan,
        decontam=all_shards("decontam"),
        # After a cluster run, Snakemake plans again (minhash.smk, minhash_replan).
        replan=rules.minhash_replan.output.stamp,
    output:
        manifest=layout.global_path(ROOT, "manifest"),
        checksums=layout.global_path(ROOT, "checksums"),
        card=layout.global_path(ROOT, "card"),
        removed=layout.global_path(ROOT, "removed_rows"),
        summary=layout.global_path(ROOT, "summary"),
    log:
        f"{LOGS}/dataset.log",
    benchmark:
        f"{RUNTIMES}/dataset.tsv"
    params:
        root=results_root,
        settings=DATASET_SETTINGS,
    shell:
        "cosmopedia dataset --root {params.root:q} --plan {input.plan:q}"
        " --settings {params.settings:q} 2> {log:q}"
