# MinHash deduplication over datatrove's four stages, one datatrove task per job.
# The signature and filter jobs of a shard read the same clean file; the filter checks
# the stream fingerprint the signature job recorded.
# The buckets job also exports this version's index (minhash/index/), which a later
# version names in `minhash.index_from` to drop what this one already has.
rule minhash_signature:
    input:
        clean=rules.clean.output.clean,
    output:
        signatures=directory(out("signatures")),
    log:
        f"{LOGS}/minhash_signature/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/minhash_signature/{{source}}/{{shard}}.tsv"
    params:
        settings=MINHASH_SETTINGS,
    shell:
        f"cosmopedia minhash-signature --input {{input.clean:q}}/{FOLDER_FILES['clean']}"
        " --output-dir {output.signatures:q}"
        " --settings {params.settings:q} 2> {log:q}"


if len(BUCKET_GROUPS) == 1:

    # All buckets in one job (minhash.bucket_jobs: 1), as datatrove tasks on the job's
    # threads (datatrove's LocalPipelineExecutor): for small runs, per-bucket jobs would
    # each pay a process start and datatrove's import for a merge that is short next to
    # them. It also writes this version's index.
    rule minhash_buckets:
        input:
            plan=rules.shard_plan.output.plan,
            signatures=all_shards("signatures"),
            previous=MINHASH_PREVIOUS_FILES,
        output:
            dups=expand(layout.global_path(ROOT, "buckets", bucket="{b}"), b=BUCKETS),
            manifests=expand(
                layout.global_path(ROOT, "buckets_manifest", bucket="{b}"), b=BUCKETS
            ),
            index=expand(
                layout.global_path(ROOT, "minhash_index", bucket="{b}"), b=BUCKETS
            ),
            index_manifests=expand(
                layout.global_path(ROOT, "minhash_index_manifest", bucket="{b}"),
                b=BUCKETS,
            ),
        log:
            f"{LOGS}/minhash_buckets.log",
        benchmark:
            f"{RUNTIMES}/minhash_buckets.tsv"
        threads: len(BUCKETS)
        params:
            settings=MINHASH_SETTINGS,
            dups_dir=dups_dir,
            index_dir=index_dir,
            root=results_root,
            version=plan.dataset_version(config),
        shell:
            "cosmopedia minhash-buckets --plan {input.plan:q} --root {params.root:q}"
            " --dups-dir {params.dups_dir:q} --index-dir {params.index_dir:q}"
            " --index-from {input.previous:q} --workers {threads}"
            " --version-name {params.version:q} --settings {params.settings:q} 2> {log:q}"

else:

    # Several buckets jobs (minhash.bucket_jobs: N), each a contiguous group of buckets,
    # one rule per group: minhash_buckets_<first>_<last> (the files keep their per-bucket
    # paths, which a wildcard rule could only give one bucket per job). Each depends on
    # the one small summary of every shard's signatures, not on each signature folder:
    # Snakemake plans each input of each job.
    localrules:
        minhash_inputs,

    rule minhash_inputs:
        input:
            plan=rules.shard_plan.output.plan,
            signatures=all_shards("signatures"),
        output:
            inputs=layout.global_path(ROOT, "minhash_inputs"),
        log:
            f"{LOGS}/minhash_inputs.log",
        params:
            settings=MINHASH_SETTINGS,
            root=results_root,
        shell:
            "cosmopedia minhash-inputs --plan {input.plan:q} --root {params.root:q}"
            " --output {output.inputs:q} --settings {params.settings:q} 2> {log:q}"

    for group in BUCKET_GROUPS:
        group_name = f"{group[0]:02d}_{group[-1]:02d}"

        rule:
            name:
                f"minhash_buckets_{group_name}"
            input:
                plan=rules.shard_plan.output.plan,
                inputs=rules.minhash_inputs.output.inputs,
                previous=sum((MINHASH_PREVIOUS[b] for b in group), []),
            output:
                dups=bucket_files("buckets", group),
                manifests=bucket_files("buckets_manifest", group),
                index=bucket_files("minhash_index", group),
                index_manifests=bucket_files("minhash_index_manifest", group),
            log:
                f"{LOGS}/minhash_buckets/{group_name}.log",
            benchmark:
                f"{RUNTIMES}/minhash_buckets/{group_name}.tsv"
            threads: len(group)
            params:
                settings=MINHASH_SETTINGS,
                dups_dir=dups_dir,
                index_dir=index_dir,
                root=results_root,
                version=plan.dataset_version(config),
                buckets=" ".join(map(str, group)),
            shell:
                "cosmopedia minhash-buckets --plan {input.plan:q} --root {params.root:q}"
                " --inputs {input.inputs:q} --buckets {params.buckets}"
                " --dups-dir {params.dups_dir:q} --index-dir {params.index_dir:q}"
                " --index-from {input.previous:q} --workers {threads}"
                " --version-name {params.version:q} --settings {params.settings:q} 2> {log:q}"


# The signature folders are read through the plan, not listed as inputs: the buckets job
# already depends on each of them, and a rule with 3,000 inputs that every filter job
# depends on costs Snakemake a scan of that list per filter job (quadratic planning).
# The job rewrites a shard's removal files only when their bytes change, in a folder that
# Snakemake keeps (update(): not deleted before the job, restored if the job fails), so
# that only the shards whose removals changed are filtered again (minhash_replan below).
rule minhash_cluster:
    input:
        plan=rules.shard_plan.output.plan,
        dups=bucket_files("buckets"),
        manifests=bucket_files("buckets_manifest"),
    output:
        removals=update(directory(layout.global_path(ROOT, "remove_dir"))),
        clusters=report(
            layout.global_path(ROOT, "clusters"),
            category="Deduplication",
            caption="../report/clusters.rst",
        ),
        report=report(
            layout.global_path(ROOT, "cluster_report"),
            category="Deduplication",
            caption="../report/cluster_report.rst",
        ),
    log:
        f"{LOGS}/minhash_cluster.log",
    benchmark:
        f"{RUNTIMES}/minhash_cluster.tsv"
    params:
        settings=MINHASH_SETTINGS,
        root=results_root,
    shell:
        "cosmopedia minhash-cluster --dups {input.dups:q}"
        " --plan {input.plan:q} --root {params.root:q}"
        " --remove-dir {output.removals:q} --clusters {output.clusters:q}"
        " --report {output.report:q} --settings {params.settings:q} 2> {log:q}"


localrules:
    minhash_replan,


# Local reruns after deduplication. Snakemake reruns every job downstream of a job that
# runs, whatever its output; so a filter job depends on the cluster job through `ancient`
# (it waits for it, but is not rerun because it ran) and on its own shard's removal files
# (.remove, .previous: rerun when they change). Which of those the cluster job rewrites is
# known only after it ran: this checkpoint, right after it, makes Snakemake plan the jobs
# again (the dataset job depends on its temporary stamp, so it is in every full run; once
# the stamp is gone, an up-to-date workflow has no checkpoint to plan again). The filter and decontaminate jobs of
# shards whose removal files or clean rows did not change then keep their files.
# A dry-run decides before clustering: it lists only the changed shards' jobs.
checkpoint minhash_replan:
    input:
        rules.minhash_cluster.output.clusters,
    output:
        stamp=temp(layout.global_path(ROOT, "minhash_replan")),
    log:
        f"{LOGS}/minhash_replan.log",
    shell:
        "touch {output.stamp:q} 2> {log:q}"


# The shard's signature folder (its stream fingerprint) is not an input: the cluster job
# depends on every signature folder already, and each input costs planning time. Its
# removal files are (common.smk, removal_files: before its first cluster run, a shard's
# job waits for minhash_replan's stamp, and is planned again with its files after it).
rule minhash_filter:
    input:
        clean=rules.clean.output.clean,
        cluster=ancient(rules.minhash_cluster.output.removals),
        removals=removal_files,
    output:
        dedup=out_folder("dedup"),
    log:
        f"{LOGS}/minhash_filter/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/minhash_filter/{{source}}/{{shard}}.tsv"
    params:
        settings=MINHASH_SETTINGS,
        stream=out("signature_stream"),
        remove_file=out("remove"),
        previous_file=out("remove_previous"),
    shell:
        f"cosmopedia minhash-filter --input {{input.clean:q}}/{FOLDER_FILES['clean']}"
        " --remove {params.remove_file:q} --previous {params.previous_file:q}"
        f" --stream {{params.stream:q}} --output {{output.dedup:q}}/{FOLDER_FILES['dedup']}"
        f" --removed {{output.dedup:q}}/{FOLDER_FILES['dedup_removed']}"
        " --settings {params.settings:q} 2> {log:q}"


# This version's index alone (e.g. to export it from a finished version); the buckets
# job writes it anyway.
rule minhash_index:
    input:
        bucket_files("minhash_index"),
        bucket_files("minhash_index_manifest"),
