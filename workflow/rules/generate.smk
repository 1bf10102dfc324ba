# The GPU step: starts generation.instances engine servers (tgi, vllm, sglang; llamacpp on
# CPU; or the dummy) inside the job, each on generation.gpus_per_instance GPUs, and streams
# the shard through them. The engine says how many GPUs a job needs (instances x
# gpus_per_instance for tgi, vllm and sglang; none for llamacpp, dummy and endpoint);
# partition, GPU model and runtime are set per cluster in profiles/<cluster>/config.yaml.
# A SIGTERM (Slurm's time limit, `--signal`, scancel) stops the servers and keeps every
# finished row in the checkpoint; the retried job resumes from it (docs/cluster.md).
GENERATE_GPUS = engines.gpus(GENERATE_JOB)
# CPU cores a job keeps busy: the client's one, or a CPU engine's servers (llamacpp:
# instances x llamacpp.threads), so local runs never start more servers than cores.
GENERATE_THREADS = engines.cpus(GENERATE_JOB)


rule generate:
    input:
        prompts=rules.prompts.output.prompts,
    output:
        # generations.parquet and provenance.json (engine, model, tokens, timings...).
        generations=out_folder("generations"),
    log:
        f"{LOGS}/generate/{{source}}/{{shard}}.log",
    benchmark:
        f"{RUNTIMES}/generate/{{source}}/{{shard}}.tsv"
    threads: GENERATE_THREADS
    resources:
        gpu=GENERATE_GPUS,
    params:
        # Compared by Snakemake: a change here regenerates every shard. The command takes
        # GENERATE_SETTINGS, which adds the operational settings (see common.smk).
        request=GENERATE_REQUEST,
        # Compared too: "" or what the shard's last job ran with, a new value for a shard
        # with failed rows when generation.retry_failed is on (README, "Failed rows").
        retry=generate_retry,
        # Beside the output folder, which Snakemake deletes before a job runs: finished
        # rows (a killed job resumes), the last output (reused by any rerun of the shard),
        # the failed rows' count (read when planning).
        checkpoint=out("generation_checkpoint"),
        previous=out("generation_previous"),
        retry_state=out("generation_retry"),
        # The servers' own output, beside the job's log (appended across retries). Not a
        # declared log: each declared file costs planning time on every shard, and the
        # job's log names this file and quotes its end when a server fails.
        engine_log=f"{LOGS}/generate/{{source}}/{{shard}}.engine.log",
    shell:
        "cosmopedia generate --prompts {input.prompts:q}"
        f" --output {{output.generations:q}}/{FOLDER_FILES['generations']}"
        f" --provenance {{output.generations:q}}/{FOLDER_FILES['generation_provenance']}"
        " --checkpoint {params.checkpoint:q}"
        " --previous {params.previous:q}"
        " --retry-state {params.retry_state:q}"
        " --retry-param={params.retry:q}"
        " --engine-log {params.engine_log:q}"
        " --settings {GENERATE_SETTINGS:q} 2> {log:q}"
