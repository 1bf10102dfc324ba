"""The dummy engine behind another engine's command line, to test launch templates.

    python tests/mimic.py tgi    --model-id M --port P --master-port Q ...
    python tests/mimic.py vllm   [serve] M --port P --max-num-seqs N ...
    python tests/mimic.py sglang --model-path M --port P --nccl-port Q ...

Put in place of the engine's program (`generation.server.program`), it parses the flags
that the workflow's templates pass to TGI's launcher, `vllm serve` and SGLang's
`launch_server` (unknown flags are errors, as they are for the real programs), checks them
as the engine would (a GPU per tensor-parallel shard in CUDA_VISIBLE_DEVICES, ports free,
TGI's shard sockets creatable), holds the extra ports and sockets while it runs, and
serves the dummy with the capacity given by the flags: TGI admits
--max-concurrent-requests (429 above), vLLM and SGLang queue every request and generate
--max-num-seqs / --max-running-requests at once. Like the real servers, the TGI
persona has /info and the vLLM and SGLang personas do not. `--dummy-*` options set the
simulation (latency, faults). Fatal problems print the line the real engine would log.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys

from cosmopedia.generation.dummy import server as dummy

UNBOUNDED = 2**31
FATAL_LINES = {
    "tgi": "Error: ShardCannotStart",
    "vllm": "RuntimeError: Engine core initialization failed. See root cause above.",
    "sglang": "Scheduler hit an exception: {}",
}


def persona_parser(persona: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"mimic {persona}")
    if persona == "tgi":
        parser.add_argument("--model-id", required=True)
        parser.add_argument("--revision")
        parser.add_argument("--num-shard", type=int, default=1)
        parser.add_argument("--hostname", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=3000)
        parser.add_argument("--master-port", type=int, default=29500)
        parser.add_argument("--shard-uds-path", default="/tmp/text-generation-server")
        parser.add_argument("--prometheus-port", type=int, default=9000)
        parser.add_argument("--max-concurrent-requests", type=int, default=128)
        parser.add_argument("--max-input-tokens", type=int)
        parser.add_argument("--max-total-tokens", type=int)
        parser.add_argument("--usage-stats", choices=["on", "off", "no-stack"], default="on")
        # TGI sizes its batch from the free KV-cache memory; the dummy takes a number.
        parser.add_argument("--dummy-max-batch", type=int, default=None)
    elif persona == "vllm":
        parser.add_argument("model")
        parser.add_argument("--revision")
        parser.add_argument("--served-model-name")
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--tensor-parallel-size", type=int, default=1)
        parser.add_argument("--max-num-seqs", type=int, default=256)
        parser.add_argument("--max-model-len", type=int)
    elif persona == "sglang":
        parser.add_argument("--model-path", required=True)
        parser.add_argument("--revision")
        parser.add_argument("--served-model-name")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=30000)
        parser.add_argument("--nccl-port", type=int)
        parser.add_argument("--tp-size", type=int, default=1)
        parser.add_argument("--max-running-requests", type=int, default=128)
        parser.add_argument("--context-length", type=int)
    else:
        raise SystemExit(f"unknown engine {persona!r}: tgi, vllm or sglang")
    dummy.add_engine_options(parser, prefix="dummy-")
    return parser


def fatal(persona: str, why: str) -> int:
    print(f"mimic {persona}: {why}", flush=True)
    print(FATAL_LINES[persona].format(why), flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python tests/mimic.py {tgi,vllm,sglang} ...")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    persona, rest = argv[0], argv[1:]
    if persona == "vllm" and rest[:1] == ["serve"]:
        rest = rest[1:]
    args = persona_parser(persona).parse_args(rest)
    options = dummy.engine_options(args, prefix="dummy-")
    if persona == "tgi":
        model, host, shards = args.model_id, args.hostname, args.num_shard
        capacity, batch = args.max_concurrent_requests, args.dummy_max_batch
        extra_ports = [args.master_port, args.prometheus_port]
        inputs, total = args.max_input_tokens, args.max_total_tokens
        if inputs and total and inputs >= total:
            return fatal(persona, "`max_input_tokens` must be < `max_total_tokens`")
    elif persona == "vllm":
        model, host = args.served_model_name or args.model, args.host
        # vLLM and SGLang queue whatever their batch cannot take: no 429.
        shards, capacity, batch = args.tensor_parallel_size, UNBOUNDED, args.max_num_seqs
        extra_ports = []
    else:
        model, host, shards = args.served_model_name or args.model_path, args.host, args.tp_size
        capacity, batch = UNBOUNDED, args.max_running_requests
        extra_ports = [args.nccl_port] if args.nccl_port else []

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    devices = [d for d in visible.split(",") if d.strip()]
    print(f"mimic {persona}: CUDA_VISIBLE_DEVICES={visible} shards={shards}", flush=True)
    if len(devices) != shards:
        return fatal(persona, f"{shards} shard(s) need as many GPUs, got {devices}")

    with contextlib.ExitStack() as stack:
        for port in extra_ports:  # held like the real engine's distributed/metrics ports
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                return fatal(persona, f"port {port}: {exc}")
            sock.listen()
        if persona == "tgi":
            for rank in range(shards):
                path = f"{args.shard_uds_path}-{rank}"
                sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                try:
                    sock.bind(path)
                except OSError as exc:
                    return fatal(persona, f"shard socket {path}: {exc}")
                stack.callback(os.unlink, path)
        info = {
            "mimic": persona,
            "cuda_visible_devices": visible,
            "num_shard": shards,
            "revision": args.revision,
        }
        server = dummy.DummyServer(
            model,
            options["latency_per_token"],
            capacity,
            options["faults"],
            serve_info=persona == "tgi",
            info_extra=info,
            max_batch=batch,
            record_requests=options["record_requests"],
        )
        dummy.serve(server, host, args.port, options["startup_delay"], options["startup_fatal"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
