rule clean:
    input:
        generations=rules.generate.output.generations,
    output:
        # kept.parquet and dropped.parquet (with the reason per row).
        clean=out_folder("clean"),
    log:
        f"{LOGS}/clean/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/clean/{{source}}/{{shard}}.tsv"
    params:
        settings=CLEAN_SETTINGS,
    shell:
        f"cosmopedia clean --input {{input.generations:q}}/{FOLDER_FILES['generations']}"
        f" --output {{output.clean:q}}/{FOLDER_FILES['clean']}"
        f" --dropped {{output.clean:q}}/{FOLDER_FILES['clean_dropped']}"
        " --settings {params.settings:q} 2> {log:q}"
