"""The generate step: prompts shard -> generations shard through LLM engine servers.

runner.py        `run(...)` and the `cosmopedia generate` command: the step end to end
engines/         one class per `generation.engine` (tgi, vllm, sglang, dummy, endpoint)
                 and the registry: settings checks, GPUs, start/stop, provenance
requests.py      a row's request: seed, key, error classes, backoff, result record
checkpoint.py    finished rows kept beside the output, so a killed job resumes
stream.py        the bounded-concurrency request stream over the engine's servers
routes.py        the client protocols (TGI /generate, OpenAI completions and chat)
chat_template.py the chat template prompts go through (none, a file, the engine's)
provenance.py    the shard's provenance.json
sidecar.py       a server process: start, readiness, smoke request, always stop
guard.py         the process-group leader under each server (stops it if the job dies)
probes.py        readiness, /info and smoke requests (standard library HTTP)
dummy/           the dummy engine's server (`cosmopedia serve-dummy`)

docs/architecture.md ("Generation") tells how a request flows through them.
"""
