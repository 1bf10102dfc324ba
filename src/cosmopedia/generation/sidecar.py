"""Run inference servers as children of the job: start, wait until healthy, always stop.

Each server runs under a small guard process (`cosmopedia.generation.guard`) that leads its
own process group, so stopping it (SIGTERM, a grace period, then SIGKILL) also stops
whatever the server spawned (TGI's launcher starts shard processes, vLLM an engine core),
and the guard stops the group by itself if the job dies without doing it (SIGKILL). A
SIGTERM sent to the job (Slurm's time limit, a Snakemake interrupt) raises `Terminated` in
the main thread, so the `with` block unwinds and nothing is left running.

Start-up fails early, with the tail of the engine log in the error: when the server exits,
when it logs a line matching one of `fatal_patterns` (CUDA out of memory, a shard that
cannot start), or when the readiness probe (by default: `/health` answers 200) does not
pass before the deadline. Then `/info` is read (if the server has it) and the smoke
request, if given, must succeed (`probes.py` has both; each engine picks its own).

Several servers (one per GPU subset) start in parallel with `running(...)`, under one
deadline, and stop together.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cosmopedia import redact
from cosmopedia.generation import probes

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30
POLL_INTERVAL_S = 0.2
# After SIGKILL, orphaned children disappear once init reaps them.
KILL_WAIT_S = 5.0
# The sidecar's own lines in the engine log start with this (after the instance prefix).
OWN_LINE = "# sidecar: "


class SidecarError(RuntimeError):
    """The engine server could not be started or did not become healthy."""


class Terminated(SystemExit):
    """The job received SIGTERM: unwind (running `finally` blocks) and exit with 143."""


_terminating = False


def _raise_terminated(signum, frame) -> None:
    # Raise once: a second SIGTERM must not interrupt the cleanup the first one started.
    global _terminating
    if not _terminating:
        _terminating = True
        raise Terminated(128 + signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises `Terminated` in the main thread (once). Nests freely."""
    global _terminating
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is _raise_terminated
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terminating = False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: str | os.PathLike, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _check_no_secrets(command: Sequence[str], env: dict[str, str]) -> None:
    """Secrets stay in the job's environment (the engine inherits it): never on the command
    line or in the configured environment, which are logged and recorded."""
    for secret in redact.secret_values():
        names = ", ".join(f"${k}" for k, v in sorted(os.environ.items()) if v == secret)
        if any(secret in arg for arg in command):
            raise SidecarError(
                f"the engine command contains the value of {names}; pass secrets through the "
                "environment, never on the command line (it is logged and recorded)"
            )
        if any(secret in value for value in env.values()):
            raise SidecarError(
                f"the engine's configured environment contains the value of {names}; the "
                "engine inherits the job's environment, leave secrets there"
            )


PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


def fill_placeholders(arg: str, values: dict) -> str:
    """`arg` with every `{name}` of `values` replaced; other braces (JSON) stay as they are."""
    return PLACEHOLDER_RE.sub(
        lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), arg
    )


def _program_exists(program: str, env: dict[str, str]) -> bool:
    if os.sep in program:
        return os.access(program, os.X_OK)
    return shutil.which(program, path=env.get("PATH")) is not None


class Sidecar:
    """Context manager running `command` until exit.

    `command` is a template: `{host}`, `{port}` and the keys of `values` are filled in.
    `env` is added to the job's environment for the engine (to `base_env` instead, when
    given: an engine that reads settings from its environment starts from a clean one).
    `prefix` tags the engine's lines in the (possibly shared) log. `ready(url)` is the
    readiness probe (True once the server serves), `smoke(url)` one request that must
    succeed. Attributes after start-up:
    `url`, `port`, `info` (the /info JSON, or None if the server has no such route),
    `startup_s`, `command` (the launched argument list, without the guard), `process` (the
    guard, group leader).
    """

    def __init__(
        self,
        command: list[str],
        log_path: str | os.PathLike,
        startup_timeout_s: float = 600.0,
        grace_s: float = 10.0,
        host: str = "127.0.0.1",
        smoke: Callable[[str], None] | None = None,
        *,
        ready: Callable[[str], bool] = probes.health,
        values: dict | None = None,
        env: dict[str, str] | None = None,
        prefix: str = "",
        fatal_patterns: Sequence[str] = (),
        port: int | None = None,
        base_env: dict[str, str] | None = None,
    ):
        self.template = list(command)
        self.values = dict(values or {})
        self.extra_env = dict(env or {})
        self.base_env = None if base_env is None else dict(base_env)
        _check_no_secrets(self.template, self.extra_env)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        self.host = host
        self.smoke = smoke
        self.ready = ready
        self.prefix = prefix
        self.fatal_patterns = [re.compile(p) for p in fatal_patterns]
        self.port: int | None = port
        self.url: str | None = None
        self.command: list[str] | None = None
        self.info: dict | None = None
        self.startup_s: float | None = None
        self.process: subprocess.Popen | None = None
        self._started_at: float | None = None
        self._log_offset = 0
        self._partial = b""
        self._stopped = False
        self._signals = contextlib.ExitStack()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- one sidecar as a context manager ----------------------------------------------------

    def __enter__(self) -> Sidecar:
        self._signals.enter_context(sigterm_raises())
        try:
            self.launch()
            deadline = self._started_at + self.startup_timeout_s
            while not self.poll():
                if time.monotonic() >= deadline:
                    raise self.not_healthy()
                time.sleep(POLL_INTERVAL_S)
            self.complete()
        except BaseException:
            self.stop()
            self._signals.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.stop()
        finally:
            self._signals.close()

    # --- start-up in steps (several sidecars start in parallel) -----------------------------

    def launch(self) -> None:
        """Start the engine (under its guard); returns at once."""
        self._started_at = time.monotonic()
        if self.port is None:
            self.port = free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        fill = {**self.values, "host": self.host, "port": self.port}
        self.command = [fill_placeholders(arg, fill) for arg in self.template]
        _check_no_secrets(self.command, self.extra_env)
        env = {**(os.environ if self.base_env is None else self.base_env), **self.extra_env}
        if not _program_exists(self.command[0], env):
            raise SidecarError(f"cannot start the engine {self.command}: no such program")
        guarded = [
            sys.executable,
            "-m",
            "cosmopedia.generation.guard",
            "--parent",
            str(os.getpid()),
            "--grace",
            str(self.grace_s),
            "--prefix",
            self.prefix,
            "--",
            *self.command,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            shown_env = " ".join(f"{k}={v}" for k, v in sorted(self.extra_env.items()))
            log_file.write(
                f"{self.prefix}{OWN_LINE}starting {self.command}"
                f"{' with ' + shown_env if shown_env else ''}\n".encode()
            )
            log_file.flush()
            self._log_offset = log_file.tell()
            try:
                self.process = subprocess.Popen(
                    guarded,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            except OSError as exc:
                raise SidecarError(f"cannot start the engine {self.command}: {exc}") from exc
        self._own_line(f"pid {self.process.pid} (process group leader)")
        log.info("engine started: pid %d, %s, log %s", self.process.pid, self.url, self.log_path)

    def poll(self) -> bool:
        """One start-up check: True once the server is ready; SidecarError if it never will."""
        code = self.process.poll()
        if code is not None:
            raise self._error(f"the engine exited with code {code} before becoming healthy")
        fatal = self._fatal_line()
        if fatal is not None:
            raise self._error(f"the engine logged a fatal start-up error: {fatal!r}")
        # Refused, reset or garbled: not serving yet.
        with contextlib.suppress(OSError, http.client.HTTPException):
            return self.ready(self.url)
        return False

    def not_healthy(self) -> SidecarError:
        return self._error(f"the engine was not healthy within {self.startup_timeout_s:g} s")

    def complete(self) -> None:
        """Once ready: read /info and send the smoke request."""
        try:
            status, info = probes.http_json(f"{self.url}/info")
            if status == 200 and isinstance(info, dict):
                self.info = info
            elif status != 404:  # servers without /info (vLLM, SGLang) are fine
                raise SidecarError(f"GET /info answered HTTP {status}")
            if self.smoke is not None:
                self.smoke(self.url)
        except (SidecarError, probes.ProbeError, OSError, http.client.HTTPException) as exc:
            raise self._error(str(exc)) from exc
        self.startup_s = time.monotonic() - self._started_at
        log.info("engine %s healthy after %.1f s", self.url, self.startup_s)

    def _fatal_line(self) -> str | None:
        if not self.fatal_patterns:
            return None
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except FileNotFoundError:
            return None
        self._log_offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line.startswith(self.prefix):
                continue  # another instance's line
            line = line[len(self.prefix) :]
            if line.startswith(OWN_LINE):
                continue
            if any(p.search(line) for p in self.fatal_patterns):
                return line.strip()
        return None

    def _error(self, message: str) -> SidecarError:
        tail = log_tail(self.log_path)
        return SidecarError(
            f"{message}: {self.command}\n--- last lines of {self.log_path} ---\n{tail}"
        )

    def _own_line(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"{self.prefix}{OWN_LINE}{text}\n")

    # --- stopping -------------------------------------------------------------------------------

    def stop(self) -> None:
        stop_all([self])


@contextlib.contextmanager
def running(sidecars: Sequence[Sidecar], startup_timeout_s: float) -> Iterator[list[Sidecar]]:
    """Start `sidecars` in parallel (one deadline for all); stop all of them on exit.

    The first one that fails aborts the start-up of all: a job with a broken engine
    instance fails fast rather than running on fewer GPUs than it holds.
    """
    sidecars = list(sidecars)
    with sigterm_raises():
        try:
            for sidecar in sidecars:
                sidecar.launch()
            deadline = time.monotonic() + startup_timeout_s
            pending = list(sidecars)
            while pending:
                pending = [s for s in pending if not s.poll()]
                if pending and time.monotonic() >= deadline:
                    raise pending[0].not_healthy()
                if pending:
                    time.sleep(POLL_INTERVAL_S)
            for sidecar in sidecars:
                sidecar.complete()
            yield sidecars
        finally:
            stop_all(sidecars)


def stop_all(sidecars: Sequence[Sidecar]) -> None:
    """SIGTERM every engine group, wait up to their grace period, SIGKILL what is left."""
    try:
        _stop_groups(sidecars)
    except Terminated:
        # SIGTERM arrived mid-cleanup: finish it (the handler raises only once), then exit.
        _stop_groups(sidecars)
        raise


def _stop_groups(sidecars: Sequence[Sidecar]) -> None:
    live = [s for s in sidecars if s.process is not None and not s._stopped]
    if not live:
        return
    for sidecar in live:
        with contextlib.suppress(ProcessLookupError):
            # The guard leads its own session, so pgid == pid.
            os.killpg(sidecar.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + max(s.grace_s for s in live)
    killed = False
    # Wait for the whole groups: the servers' children may outlive the leaders.
    while alive := [s for s in live if _group_alive(s.process)]:
        if time.monotonic() >= deadline:
            if killed:
                log.warning("engine processes still exist after SIGKILL: %s", alive)
                break
            log.warning("%d engine(s) did not stop within the grace period: SIGKILL", len(alive))
            for sidecar in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(sidecar.process.pid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + KILL_WAIT_S
        time.sleep(0.05)
    for sidecar in live:
        sidecar.process.wait()
        sidecar._stopped = True
        sidecar._own_line(f"stopped, exit code {sidecar.process.returncode}")


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader, or its zombie would count as a live member
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True
