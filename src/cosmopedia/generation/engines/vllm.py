"""Engine `vllm`: `vllm serve`, OpenAI-compatible API. It has no /info and queues what
its batch cannot take: the capacity is `server.max_concurrent_requests`."""

from __future__ import annotations

from cosmopedia.generation import wire
from cosmopedia.generation.engines.served import ServedEngine


class VllmEngine(ServedEngine):
    kind = "vllm"
    default_api = "openai"
    sampling_read = wire.OPENAI_SERVERS  # no TGI /generate
    program = ("vllm", "serve")
    arguments = (
        "{model}",
        "--revision", "{revision}",
        "--served-model-name", "{model}",
        "--host", "{host}",
        "--port", "{port}",
        "--tensor-parallel-size", "{num_shard}",
        "--max-model-len", "{max_total_tokens}",
    )  # fmt: skip
    fatal_log_patterns = (
        r"Engine core initialization failed",
        r"CUDA out of memory",
        r"OutOfMemoryError",
        r"No available memory for the cache blocks",
    )
