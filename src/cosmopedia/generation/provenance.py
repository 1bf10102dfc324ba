"""What a generations shard's provenance.json records: the engine (kind, API, route, chat
template, launch command, image, /info), each server instance, the model and sampling,
the seed scheme, the client's limits, counts (done, failed by cause, finish reasons,
tokens, retries, rows reused from the checkpoint), the host and the timings.

dataset.py copies the parts that describe the data into the manifest; host, devices,
timings, retries and reused rows describe one run.
"""

from __future__ import annotations

import collections
import os
import socket

import huggingface_hub

from cosmopedia import settings
from cosmopedia.generation.chat_template import ChatTemplate
from cosmopedia.generation.engines import Started
from cosmopedia.generation.requests import failure_cause
from cosmopedia.generation.stream import Stream
from cosmopedia.seeding import SCHEME


def shard_provenance(
    job: settings.Generate,
    started: Started,
    stream: Stream,
    route: str,
    template: ChatTemplate,
    results: list[dict],
    reused: int,
    concurrency: int,
    timings: dict[str, float],
) -> dict:
    g = job.generation
    failures = collections.Counter(
        cause for cause in map(failure_cause, results) if cause is not None
    )
    first = stream.instances[0].route if stream.instances else None
    ignored = first.ignored_sampling if first else ()
    engine = {
        **started.record,
        "route": route,
        "chat_template": template.record(),
        "ignored_sampling": list(ignored),
    }
    sent = first.request_record() if first else None
    if sent is not None:  # the sampling fields as the engine receives them
        engine["request_sampling"] = sent
    instances = [
        {**server.record, "requests": instance.sent}
        for server, instance in zip(started.servers, stream.instances, strict=True)
    ]
    return {
        "engine": engine,
        "instances": instances,
        "model": g.model,
        "revision": g.revision,
        "dataset_version": job.dataset_version,
        "seed_scheme": f"derive_seed(dataset_version, id) = {SCHEME}",
        "sampling": settings.to_dict(g.sampling),
        "client": {
            "library": f"huggingface_hub {huggingface_hub.__version__}",
            "concurrency": concurrency,
            "concurrency_limit": g.concurrency,
            "engine_capacity": sum(server.capacity for server in started.servers),
            "request_timeout_s": g.request_timeout_s,
            "max_retries": g.max_retries,
            "backoff_base_s": g.backoff_base_s,
            "backoff_max_s": g.backoff_max_s,
        },
        "rows": len(results),
        "done": len(results) - sum(failures.values()),
        "failed": sum(failures.values()),
        "failures_by_cause": dict(sorted(failures.items())),
        "finish_reasons": dict(
            sorted(collections.Counter(r["finish_reason"] for r in results).items())
        ),
        "generated_tokens": sum(r["text_token_length"] or 0 for r in results),
        "retries": sum(r["attempts"] - 1 for r in results),
        "reused_from_checkpoint": reused,
        "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "timings": {name: round(seconds, 3) for name, seconds in timings.items()},
    }
