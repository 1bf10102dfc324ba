# MinHash deduplication over datatrove's four stages, one datatrove task per job.
# The signature and filter jobs of a shard read the same clean file through the same
# function; the filter checks the stream fingerprint the signature job recorded.
# The buckets job also exports this version's index (minhash/index/), which a later
# version names in `minhash.index_from` to drop what this one already has.
rule minhash_signature:
    input:
        clean=rules.clean.output.kept,
    output:
        signatures=directory(out("signatures")),
        stream=out("signature_stream"),
    log:
        f"{LOGS}/minhash_signature/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/minhash_signature/{{source}}/{{shard}}.tsv"
    params:
        settings=settings(plan.minhash_settings(config)),
    shell:
        "cosmopedia minhash-signature --input {input.clean:q} --output-dir {output.signatures:q}"
        " --stream {output.stream:q} --settings {params.settings:q} 2> {log:q}"


# All buckets in one job, as datatrove tasks on the job's threads (datatrove's
# LocalPipelineExecutor): per-bucket jobs would each pay a process start and datatrove's
# import for a merge that is short next to them. It also writes this version's index.
rule minhash_buckets:
    input:
        signatures=all_shards("signatures"),
        previous=MINHASH_PREVIOUS_FILES,
    output:
        dups=expand(layout.global_path(ROOT, "buckets", bucket="{b}"), b=BUCKETS),
        manifests=expand(
            layout.global_path(ROOT, "buckets_manifest", bucket="{b}"), b=BUCKETS
        ),
        index=expand(layout.global_path(ROOT, "minhash_index", bucket="{b}"), b=BUCKETS),
        index_manifests=expand(
            layout.global_path(ROOT, "minhash_index_manifest", bucket="{b}"), b=BUCKETS
        ),
    log:
        f"{LOGS}/minhash_buckets.log",
    benchmark:
        f"{BENCHMARKS}/minhash_buckets.tsv"
    threads: len(BUCKETS)
    params:
        settings=settings(plan.minhash_settings(config)),
        signatures=signature_args,
        dups_dir=dups_dir,
        index_dir=index_dir,
        version=plan.dataset_version(config),
    shell:
        "cosmopedia minhash-buckets --signatures {params.signatures}"
        " --dups-dir {params.dups_dir:q} --index-dir {params.index_dir:q}"
        " --index-from {input.previous:q} --workers {threads}"
        " --version-name {params.version:q} --settings {params.settings:q} 2> {log:q}"


rule minhash_cluster:
    input:
        dups=rules.minhash_buckets.output.dups,
        manifests=rules.minhash_buckets.output.manifests,
        signatures=all_shards("signatures"),
    output:
        removals=directory(layout.global_path(ROOT, "remove_dir")),
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
        f"{BENCHMARKS}/minhash_cluster.tsv"
    params:
        settings=settings(plan.minhash_settings(config)),
        signatures=signature_args,
    shell:
        "cosmopedia minhash-cluster --dups {input.dups:q} --signatures {params.signatures}"
        " --remove-dir {output.removals:q} --clusters {output.clusters:q}"
        " --report {output.report:q} --settings {params.settings:q} 2> {log:q}"


rule minhash_filter:
    input:
        clean=rules.clean.output.kept,
        stream=rules.minhash_signature.output.stream,
        removals=rules.minhash_cluster.output.removals,
    output:
        kept=out("dedup"),
        removed=out("dedup_removed"),
    log:
        f"{LOGS}/minhash_filter/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/minhash_filter/{{source}}/{{shard}}.tsv"
    params:
        settings=settings(plan.minhash_settings(config)),
        remove_file=remove_file,
        previous_file=previous_file,
    shell:
        "cosmopedia minhash-filter --input {input.clean:q} --remove {params.remove_file:q}"
        " --previous {params.previous_file:q}"
        " --stream {input.stream:q} --output {output.kept:q} --removed {output.removed:q}"
        " --settings {params.settings:q} 2> {log:q}"


# This version's index alone (e.g. to export it from a finished version); the buckets
# job writes it anyway.
rule minhash_index:
    input:
        rules.minhash_buckets.output.index,
        rules.minhash_buckets.output.index_manifests,
