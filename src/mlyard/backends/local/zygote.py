"""A fork server for step processes: ``python -m mlyard.backends.local.zygote``.

Starting a fresh interpreter and importing mlyard, pydantic and numpy costs a few hundred
milliseconds per step. This process imports them once and forks a child per step instead, so a
trivial step costs milliseconds. It stays single-threaded (forking is safe) and never imports
CUDA libraries (a child may initialise CUDA after the fork; the parent must not have).

Protocol, JSON lines: on stdin ``{"job": id, "task": uri, "endpoint_url": url or null,
"env": {...}, "log": path, "cwd": dir}``, or ``{"preload": [module, ...]}`` to import the
libraries the run's pipeline module uses before the next fork; on stdout ``{"job": id, "pid":
n}`` once a child has the job and ``{"pid": n, "exit": code}`` when a child ends (negative:
killed by that signal). EOF
on stdin ends the server; its children live on (each in its own session) for a restarted
orchestrator to re-attach.

One child is always forked ahead and waits for the next request, so no fork sits between two
steps. A child that finishes normally tells the server its exit status over a pipe just before
it exits, so the end is reported without waiting for the kernel to tear the process down and
deliver SIGCHLD (~2 ms per step); a child killed by a signal is reported when it is reaped.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
from typing import Any

#: Imported before any fork, so children start with them loaded.
PRELOADED = (
    "psutil",
    "mlyard.runtime.__main__",
    "mlyard.runtime.execute",
    "mlyard.runtime.usage",
    "mlyard.artifacts.materializers",
    "mlyard.artifacts.store",
)


def _preload(names: list[str]) -> bool:
    """Import ``names`` for good, shared with every child forked afterwards; False when all
    were imported already."""
    import importlib

    names = [name for name in names if name not in sys.modules]
    if not names:
        return False
    gc.disable()  # they live for good: no collection while importing them
    for name in names:
        # Optional or broken pieces: the child imports what it needs and meets the error.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    from mlyard.runtime.__main__ import prepare_for_fork

    prepare_for_fork()
    gc.freeze()  # children share these objects without the collector touching them
    gc.enable()
    return True


def _spare(out: Any, server_fds: tuple[int, ...], ended: int) -> tuple[int, int]:
    """Fork the next step process before its request comes: it waits on a pipe of its own.

    Returns its pid and the pipe's write end. Forking (~1.5 ms for this process's memory) and
    the child's first page faults then happen while the previous step runs, not between steps.
    """
    request_read, request_write = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(request_read)
        return pid, request_write
    try:
        out.close()
        signal.set_wakeup_fd(-1)
        for fd in (*server_fds, request_write):
            os.close(fd)
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        request = _read_request(request_read)
    except BaseException:
        os._exit(2)
    if request is None:  # the server ended without handing this process a step
        os._exit(0)
    _child(request, ended)
    os._exit(2)  # not reached: _child never returns


def _read_request(fd: int) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    os.close(fd)
    request: dict[str, Any] = json.loads(data)
    return request


def _hand_over(spare: tuple[int, int], line: bytes) -> bool:
    """Send a request line to a spare; False when the spare died while it waited."""
    _, pipe = spare
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(pipe, view) :]
        return True
    except OSError:
        return False
    finally:
        os.close(pipe)


def _child(request: dict[str, Any], ended: int) -> None:
    """In a spare that got its request: become the step process and run the runtime; never
    returns. ``ended``: the pipe to tell the server this process's exit status on the way out.
    """
    code = 2
    try:
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        _set_environment(request["env"])
        os.chdir(request["cwd"])
        endpoint_url = request.get("endpoint_url")
        sys.argv = ["python -m mlyard.runtime", request["task"]]
        if endpoint_url:
            sys.argv += ["--endpoint-url", endpoint_url]
        from mlyard.runtime.__main__ import execute

        code = execute(request["task"], endpoint_url=endpoint_url)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # report, then exit with a failure code: never return to the server
        import traceback

        traceback.print_exc()
        code = 2
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            with contextlib.suppress(OSError):
                os.write(ended, f"{os.getpid()} {code}\n".encode())  # atomic: < PIPE_BUF
            os._exit(code)


def _set_environment(wanted: dict[str, str]) -> None:
    """Make ``os.environ`` equal ``wanted``, changing only what differs: the step's
    environment is this server's plus a few variables, and every change is a libc call."""
    environment = os.environ
    for name in [name for name in environment if name not in wanted]:
        del environment[name]
    for name, value in wanted.items():
        if environment.get(name) != value:
            environment[name] = value


def _report_exit(out: Any, pid: int, code: int) -> None:
    out.write(json.dumps({"pid": pid, "exit": code}) + "\n")
    out.flush()


def _report_announced(out: Any, ended_read: int, reported: set[int]) -> None:
    """Report the exits children announced on the pipe (they are about to be reaped)."""
    with contextlib.suppress(BlockingIOError):
        for line in os.read(ended_read, 65536).decode().splitlines():
            pid_text, code_text = line.split()
            _report_exit(out, int(pid_text), int(code_text))
            reported.add(int(pid_text))


def _reap(out: Any, ended_read: int, reported: set[int]) -> None:
    # A child writes its announcement before it exits: reading the pipe after waitpid()
    # returned it finds the announcement of every child that made one, so none is reported
    # twice.
    _report_announced(out, ended_read, reported)
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid not in reported:
            _report_announced(out, ended_read, reported)  # it may have announced just now
        if pid in reported:
            reported.discard(pid)  # its end was announced already
            continue
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _report_exit(out, pid, code)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's business
    _preload(list(PRELOADED))
    out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the protocol
    # A child's end wakes the loop at once through this pipe (no polling delay per step).
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    ended_read, ended_write = os.pipe()
    os.set_blocking(ended_read, False)
    reported: set[int] = set()
    server_fds = (wake_read, wake_write, ended_read)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    spare: tuple[int, int] | None = _spare(out, server_fds, ended_write)
    buffer = b""
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([stdin, wake_read, ended_read], [], [], 1.0)
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
        _reap(out, ended_read, reported)
        if stdin not in readable:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            # The orchestrator is done: leave at once (children live on in their sessions);
            # a full interpreter teardown would only delay the orchestrator's exit.
            out.flush()
            os._exit(0)
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            if "preload" in request:
                if _preload(request["preload"]) and spare is not None:
                    # Forked before these imports: let it go, fork anew.
                    os.close(spare[1])
                    spare = None
                continue
            job = request["job"]
            while True:
                taken = spare or _spare(out, server_fds, ended_write)
                spare = None
                if _hand_over(taken, line + b"\n"):
                    break
            out.write(json.dumps({"job": job, "pid": taken[0]}) + "\n")
            out.flush()
        _reap(out, ended_read, reported)
        if spare is None:
            spare = _spare(out, server_fds, ended_write)


if __name__ == "__main__":
    serve()
