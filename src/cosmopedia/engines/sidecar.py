"""Run an inference server as a child of the job: start, wait until healthy, always stop.

The server gets its own process group, so stopping it (SIGTERM, a grace period, then
SIGKILL) also stops whatever it spawned (TGI's launcher starts shard processes). A SIGTERM
sent to the job (Slurm's time limit, a Snakemake interrupt) raises `Terminated` in the
main thread, so the `with` block unwinds and nothing is left running.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
LOG_TAIL_LINES = 30
POLL_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 5.0
SMOKE_TIMEOUT_S = 120.0
# After SIGKILL, orphaned children disappear once init reaps them.
KILL_WAIT_S = 5.0


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


def _check_no_secrets(command: list[str]) -> None:
    for var in SECRET_ENV_VARS:
        secret = os.environ.get(var)
        if secret and any(secret in arg for arg in command):
            raise SidecarError(
                f"the engine command contains the value of ${var}; pass secrets through the "
                "environment, never on the command line (it is logged and recorded)"
            )


# Proxies from the environment must never see requests to the job's own loopback server.
_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, payload=None, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, object]:
    """GET (or POST `payload` as JSON) without proxies: (status, parsed body or None)."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with _LOCAL_OPENER.open(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:  # not JSON (or not even text)
        return status, None


def tgi_smoke_request(base_url: str) -> None:
    """One tiny generation through TGI's /generate route."""
    status, body = http_json(
        f"{base_url}/generate",
        {"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
        timeout=SMOKE_TIMEOUT_S,
    )
    if status != 200 or not isinstance(body, dict) or "generated_text" not in body:
        raise SidecarError(f"smoke request to {base_url}/generate failed: HTTP {status} {body}")


class Sidecar:
    """Context manager running `command` (with `{host}`/`{port}` filled in) until exit.

    Attributes after entering: `url`, `port`, `info` (the /info JSON, or None if the server
    has no such route), `startup_s`, `command` (the launched argument list).
    """

    def __init__(
        self,
        command: list[str],
        log_path: str | os.PathLike,
        startup_timeout_s: float = 600.0,
        grace_s: float = 10.0,
        host: str = "127.0.0.1",
        smoke: Callable[[str], None] | None = tgi_smoke_request,
    ):
        _check_no_secrets(command)
        self.template = list(command)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        self.host = host
        self.smoke = smoke
        self.port: int | None = None
        self.url: str | None = None
        self.command: list[str] | None = None
        self.info: dict | None = None
        self.startup_s: float | None = None
        self.process: subprocess.Popen | None = None
        self._signals = contextlib.ExitStack()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Sidecar:
        self._signals.enter_context(sigterm_raises())
        try:
            self._start()
        except BaseException:
            self._stop()
            self._signals.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._stop()
        finally:
            self._signals.close()

    def _start(self) -> None:
        started = time.monotonic()
        self.port = free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        self.command = [arg.format(host=self.host, port=self.port) for arg in self.template]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"# sidecar: starting {self.command}\n".encode())
            log_file.flush()
            try:
                self.process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:  # e.g. the program does not exist
                raise SidecarError(f"cannot start the engine {self.command}: {exc}") from exc
        with open(self.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"# sidecar: pid {self.process.pid} (process group leader)\n")
        log.info("engine started: pid %d, %s, log %s", self.process.pid, self.url, self.log_path)

        self._wait_healthy(started + self.startup_timeout_s)
        try:
            status, info = http_json(f"{self.url}/info")
            if status == 200 and isinstance(info, dict):
                self.info = info
            elif status != 404:  # servers without /info (vLLM) are fine
                raise SidecarError(f"GET /info answered HTTP {status}")
            if self.smoke is not None:
                self.smoke(self.url)
        except (SidecarError, OSError, http.client.HTTPException) as exc:
            raise self._error(str(exc)) from exc
        self.startup_s = time.monotonic() - started
        log.info("engine healthy after %.1f s", self.startup_s)

    def _wait_healthy(self, deadline: float) -> None:
        while True:
            code = self.process.poll()
            if code is not None:
                raise self._error(f"the engine exited with code {code} before becoming healthy")
            # Refused, reset or garbled: not serving yet.
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_json(f"{self.url}/health", timeout=1.0)
                if status == 200:
                    return
            if time.monotonic() >= deadline:
                raise self._error(f"the engine was not healthy within {self.startup_timeout_s:g} s")
            time.sleep(POLL_INTERVAL_S)

    def _error(self, message: str) -> SidecarError:
        tail = log_tail(self.log_path)
        return SidecarError(
            f"{message}: {self.command}\n--- last lines of {self.log_path} ---\n{tail}"
        )

    def _stop(self) -> None:
        try:
            self._stop_group()
        except Terminated:
            # SIGTERM arrived mid-cleanup: finish it (the handler raises only once), then exit.
            self._stop_group()
            raise

    def _stop_group(self) -> None:
        """SIGTERM the process group, wait `grace_s`, then SIGKILL whatever is left of it."""
        if self.process is None:
            return
        pgid = self.process.pid  # leader of its own session, so pgid == pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        killed = False
        # Wait for the whole group: the server's children may outlive the leader.
        while _group_alive(self.process, pgid):
            if time.monotonic() >= deadline:
                if killed:
                    log.warning("processes of group %d still exist after SIGKILL", pgid)
                    break
                log.warning("engine did not stop within %g s: SIGKILL", self.grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + KILL_WAIT_S
            time.sleep(0.05)
        self.process.wait()
        with open(self.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"# sidecar: stopped, exit code {self.process.returncode}\n")


def _group_alive(process: subprocess.Popen, pgid: int) -> bool:
    process.poll()  # reap the leader, or its zombie would count as a live member
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
