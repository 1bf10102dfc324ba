"""Engine `sglang`: `python -m sglang.launch_server`, OpenAI-compatible API. It has no
/info and queues what its batch cannot take: the capacity is
`server.max_concurrent_requests`."""

from __future__ import annotations

from cosmopedia.generation import wire
from cosmopedia.generation.engines.served import ServedEngine


class SglangEngine(ServedEngine):
    kind = "sglang"
    default_api = "openai"
    sampling_read = wire.OPENAI_SERVERS  # no TGI /generate
    program = ("python", "-m", "sglang.launch_server")
    arguments = (
        "--model-path", "{model}",
        "--revision", "{revision}",
        "--served-model-name", "{model}",
        "--host", "{host}",
        "--port", "{port}",
        "--nccl-port", "{master_port}",
        "--tp-size", "{num_shard}",
        "--context-length", "{max_total_tokens}",
    )  # fmt: skip
    fatal_log_patterns = (
        r"Scheduler hit an exception",
        r"CUDA out of memory",
        r"OutOfMemoryError",
        r"Received sigquit from a child process",
    )
