"""The orchestrator's side of the fork server (see ``zygote.py``)."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from mlyard.backends.local.processes import started_since_boot

logger = logging.getLogger(__name__)

#: How long to wait for the fork server to import its modules before falling back.
STARTUP_TIMEOUT_SECONDS = 30.0


class ForkServer:
    """Forks step processes from a pre-imported interpreter; thread-safe."""

    def __init__(self) -> None:
        """Start the server; more libraries are imported into it with ``import_libraries``."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mlyard.backends.local.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._pids: dict[str, int] = {}
        self._forked = threading.Condition()
        self._exits: dict[int, int] = {}
        #: Set whenever a child ends; the backend waits on it between status polls.
        self.child_ended = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name="mlyard-fork-server")
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> bool:
        return self._ready.wait(timeout) and self.alive

    def _read(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            message = json.loads(raw)
            with self._forked:
                if "ready" in message:
                    self._ready.set()
                elif "job" in message:
                    self._pids[message["job"]] = message["pid"]
                else:
                    self._exits[message["pid"]] = message["exit"]
                    self.child_ended.set()
                self._forked.notify_all()
        with self._forked:
            self._forked.notify_all()

    def start(
        self,
        job_id: str,
        task_uri: str,
        endpoint_url: str | None,
        environment: Mapping[str, str],
        log_path: Path,
    ) -> None:
        """Ask for a step process running the task at ``task_uri``; returns without waiting
        for the fork (the pid comes with the server's reply: ``pid_of``)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        request = {
            "job": job_id,
            "task": task_uri,
            "endpoint_url": endpoint_url,
            "env": dict(environment),
            "log": str(log_path),
            "cwd": str(Path.cwd()),
        }
        assert self._process.stdin is not None
        with self._lock:
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()

    def import_libraries(self, modules: Sequence[str]) -> None:
        """Have the server import ``modules`` before its next fork (the libraries of the run's
        pipeline, ``s3fs`` for an S3 store), so that each step process starts with them."""
        if not modules:
            return
        assert self._process.stdin is not None
        try:
            with self._lock:
                request = json.dumps({"preload": list(modules)}) + "\n"
                self._process.stdin.write(request.encode())
                self._process.stdin.flush()
        except OSError as error:  # it died: steps start as plain processes (``wait_ready``)
            logger.debug("the fork server is gone, nothing to preload: %s", error)

    def pid_of(self, job_id: str, timeout: float = 0.0) -> int | None:
        """The pid of the process forked for ``job_id``, waiting up to ``timeout`` seconds for
        it; None when it is not known by then or the server ended before forking it."""
        deadline = time.monotonic() + timeout
        with self._forked:
            while job_id not in self._pids:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.alive:
                    return None
                self._forked.wait(min(remaining, 1.0))
            return self._pids[job_id]

    def exit_code(self, pid: int) -> int | None:
        with self._forked:
            return self._exits.get(pid)

    def started(self, pid: int) -> float:
        """``started_since_boot(pid)`` of a forked step, 0 when it has already gone."""
        try:
            return started_since_boot(pid)
        except psutil.Error:
            return 0.0

    def close(self) -> None:
        """End the server; step processes it forked keep running."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            # A server that died leaves unsent requests behind: closing cannot flush them.
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()


#: A server started ahead of its backend (see ``prestart``), waiting to be taken.
_prestarted: ForkServer | None = None
_prestart_lock = threading.Lock()


def prestart(libraries: Sequence[str] = ()) -> None:
    """Start a fork server now, so that its imports overlap the run's preparation; the local
    backend takes it at its first step. Idempotent: a server started already is kept, and
    ``libraries`` are imported into it."""
    global _prestarted
    with _prestart_lock:
        if _prestarted is None:
            _prestarted = ForkServer()
        _prestarted.import_libraries(libraries)


def discard_prestarted() -> None:
    """Stop a server started ahead of a run that turned out not to need it (another backend,
    or a local profile without the fork server)."""
    global _prestarted
    with _prestart_lock:
        server, _prestarted = _prestarted, None
    if server is not None:
        server.close()


def take() -> ForkServer:
    """The prestarted server when it still runs, else a new one."""
    global _prestarted
    with _prestart_lock:
        server, _prestarted = _prestarted, None
    if server is not None:
        if server.alive:
            return server
        server.close()
    return ForkServer()
