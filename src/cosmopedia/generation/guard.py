"""Leader of an engine's process group: relays its output, and stops it if the job dies.

    python -m cosmopedia.generation.guard --parent PID --grace S [--prefix P] -- COMMAND...

The sidecar starts this guard in a new session (so it leads the engine's process group)
and the guard runs the engine inside that group. It

* copies the engine's output line by line to its own stdout (the engine log), each line
  behind `--prefix` (the instance tag when a job runs several engines);
* asks the kernel for SIGTERM when its parent (the job) dies (`PR_SET_PDEATHSIG`, Linux).
  If the job was killed without stopping the engine (SIGKILL, OOM killer), the guard
  stops the whole group itself: SIGTERM, `--grace` seconds, then SIGKILL. A SIGTERM that
  arrives while the job is alive came from the sidecar (or Slurm), which signals the whole
  group: the guard then just waits for the engine;
* exits with the engine's exit code (128 + N if a signal N ended it).

Only the standard library: it must start fast and never fail on import.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
EXIT_CANNOT_START = 127


def _set_parent_death_signal(signum: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cosmopedia.generation.guard")
    parser.add_argument("--parent", type=int, required=True, help="pid of the job")
    parser.add_argument("--grace", type=float, default=10.0, help="SIGTERM -> SIGKILL, seconds")
    parser.add_argument("--prefix", default="", help="written before every output line")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.parent:  # the job died before the death signal was armed
        return 1

    cleaning_up = False

    def on_sigterm(signum, frame) -> None:
        nonlocal cleaning_up
        if cleaning_up or os.getppid() == args.parent:
            return  # the job is alive: it (or Slurm) signalled the whole group
        cleaning_up = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)
        signal.signal(signal.SIGALRM, lambda *_: os.killpg(0, signal.SIGKILL))
        signal.setitimer(signal.ITIMER_REAL, max(args.grace, 0.01))

    signal.signal(signal.SIGTERM, on_sigterm)
    out = sys.stdout.buffer
    prefix = args.prefix.encode()
    try:
        child = subprocess.Popen(
            args.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        out.write(prefix + f"cannot start {args.command[0]!r}: {exc}\n".encode())
        out.flush()
        return EXIT_CANNOT_START
    for line in iter(child.stdout.readline, b""):
        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        out.flush()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
