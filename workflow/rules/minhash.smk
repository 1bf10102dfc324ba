# MinHash deduplication over datatrove's four stages, one datatrove task per job.
# The signature and filter jobs of a shard read the same clean file through the same
# function; the filter checks the stream fingerprint the signature job recorded.
rule minhash_signature:
    input:
        clean=rules.clean.output.kept,
    output:
        signatures=directory(out("signatures")),
        stream=out("signature_stream"),
    params:
        settings=settings(plan.minhash_settings(config)),
    log:
        f"{LOGS}/minhash_signature/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/minhash_signature/{{source}}/{{shard}}.tsv"
    shell:
        "cosmopedia minhash-signature --input {input.clean:q} --output-dir {output.signatures:q}"
        " --stream {output.stream:q} --settings {params.settings:q} 2> {log:q}"


rule minhash_buckets:
    input:
        signatures=all_shards("signatures"),
    output:
        dups=layout.global_path(ROOT, "buckets", bucket="{bucket}"),
        manifest=layout.global_path(ROOT, "buckets", bucket="{bucket}") + ".json",
    params:
        settings=settings(plan.minhash_settings(config)),
        signatures=signature_args,
    log:
        f"{LOGS}/minhash_buckets/{{bucket}}.log",
    benchmark:
        f"{BENCHMARKS}/minhash_buckets/{{bucket}}.tsv"
    shell:
        "cosmopedia minhash-buckets --bucket {wildcards.bucket} --signatures {params.signatures}"
        " --output {output.dups:q} --settings {params.settings:q} 2> {log:q}"


rule minhash_cluster:
    input:
        dups=expand(rules.minhash_buckets.output.dups, bucket=BUCKETS),
        manifests=expand(rules.minhash_buckets.output.manifest, bucket=BUCKETS),
        signatures=all_shards("signatures"),
    output:
        removals=directory(layout.global_path(ROOT, "remove_dir")),
        clusters=report(
            layout.global_path(ROOT, "clusters"),
            category="Deduplication",
            caption="../report/clusters.rst",
        ),
    params:
        settings=settings(plan.minhash_settings(config)),
        signatures=signature_args,
    log:
        f"{LOGS}/minhash_cluster.log",
    benchmark:
        f"{BENCHMARKS}/minhash_cluster.tsv"
    shell:
        "cosmopedia minhash-cluster --dups {input.dups:q} --signatures {params.signatures}"
        " --remove-dir {output.removals:q} --clusters {output.clusters:q}"
        " --settings {params.settings:q} 2> {log:q}"


rule minhash_filter:
    input:
        clean=rules.clean.output.kept,
        stream=rules.minhash_signature.output.stream,
        removals=rules.minhash_cluster.output.removals,
    output:
        kept=out("dedup"),
        removed=out("dedup_removed"),
    params:
        settings=settings(plan.minhash_settings(config)),
        remove_file=remove_file,
    log:
        f"{LOGS}/minhash_filter/{{source}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/minhash_filter/{{source}}/{{shard}}.tsv"
    shell:
        "cosmopedia minhash-filter --input {input.clean:q} --remove {params.remove_file:q}"
        " --stream {input.stream:q} --output {output.kept:q} --removed {output.removed:q}"
        " --settings {params.settings:q} 2> {log:q}"
