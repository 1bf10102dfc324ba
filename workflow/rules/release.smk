# Not part of `all`: `snakemake publish` uploads the release (needs network and HF_TOKEN
# in the environment; with publish.dry_run or no publish.repo_id it only lists the files).
localrules:
    publish,


rule publish:
    input:
        manifest=rules.dataset.output.manifest,
        card=rules.dataset.output.card,
    output:
        receipt=layout.global_path(ROOT, "publish_receipt"),
    log:
        f"{LOGS}/publish.log",
    params:
        release=release_dir,
        options=publish_options,
    shell:
        "cosmopedia publish --release {params.release:q} {params.options}"
        " --receipt {output.receipt:q} 2> {log:q}"
