"""Engine `tgi`: text-generation-inference 3.x (`text-generation-launcher`), TGI's own
API; its /info gives the capacity (`--max-concurrent-requests`). Its OpenAI-compatible
routes read fewer sampling parameters than /generate (wire.py)."""

from __future__ import annotations

from cosmopedia.generation import wire
from cosmopedia.generation.engines.served import ServedEngine


class TgiEngine(ServedEngine):
    kind = "tgi"
    default_api = "tgi"
    sampling_read = wire.TGI
    sampling_why = wire.TGI_WHY
    program = ("text-generation-launcher",)
    arguments = (
        "--model-id", "{model}",
        "--revision", "{revision}",
        "--num-shard", "{num_shard}",
        "--hostname", "{host}",
        "--port", "{port}",
        "--master-port", "{master_port}",
        "--shard-uds-path", "{shard_uds_path}",
        "--prometheus-port", "{prometheus_port}",
        "--max-concurrent-requests", "{max_concurrent_requests}",
        "--max-input-tokens", "{max_input_tokens}",
        "--max-total-tokens", "{max_total_tokens}",
        "--usage-stats", "off",
    )  # fmt: skip
    fatal_log_patterns = (
        r"ShardCannotStart",
        r"WebserverFailed",
        r"Shard \d+ failed to start",
        r"DownloadError",
        r"CUDA out of memory",
        r"OutOfMemoryError",
    )
