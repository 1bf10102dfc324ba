"""Engine `dummy`: this package's stand-in server (`cosmopedia serve-dummy`,
`cosmopedia.generation.dummy`) as a sidecar: TGI's API, no GPU, no model; its simulation
(latency, capacity, batch, faults) comes from `generation.dummy`. Its command is its own:
of the `server` settings it uses only the environment, fatal log lines and stop grace.
Its server reads every sampling parameter on every route."""

from __future__ import annotations

import sys

from cosmopedia.generation import wire
from cosmopedia.generation.engines.served import ServedEngine


class DummyEngine(ServedEngine):
    kind = "dummy"
    default_api = "tgi"
    fatal_log_patterns = (r"^FATAL\b",)
    # On a GPU node it takes the devices it sees, as the GPU engine it stands in for.
    gpu_use = "optional"
    settings_used = frozenset(
        {
            "gpus_per_instance",
            "dummy",
            "server.env",
            "server.fatal_log_patterns",
            "server.stop_grace_s",
        }
    )
    sampling_read = wire.EVERY_ROUTE
    determinism = "exact: the dummy engine is a pure function of prompt and seed"

    def check(self) -> None:
        self.check_env()

    def command_template(self) -> list[str]:
        """`serve-dummy` with no placeholders but host and port; simulation flags when set."""
        g = self.generation
        dummy = g.dummy
        command = [
            sys.executable, "-m", "cosmopedia.cli", "serve-dummy",
            "--host", "{host}",
            "--port", "{port}",
            "--model-id", g.model,
            "--latency-per-token", str(dummy.latency_per_token_s),
            "--max-concurrent", str(dummy.max_concurrent),
        ]  # fmt: skip
        if dummy.max_batch is not None:
            command += ["--max-batch", str(dummy.max_batch)]
        faults = dummy.faults
        flags = {
            "--fault-seed": faults.seed,
            "--fault-429": faults.rate_429,
            "--fault-503": faults.rate_503,
            "--fault-reset": faults.rate_reset,
            "--fault-hang": faults.rate_hang,
            "--crash-after": faults.crash_after,
        }
        if any(v for k, v in flags.items() if k != "--fault-seed"):
            for flag, value in flags.items():
                command += [flag, str(value)]
        return command

    def default_capacity(self) -> int:
        return self.generation.dummy.max_concurrent
