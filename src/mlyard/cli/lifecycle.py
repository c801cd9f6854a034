"""The life of an ``mlyard`` process around its command: start-up and exit.

Start-up: the command's imports create ~400k objects (modules, classes, functions) that live
until the process ends, and the garbage collector would scan them again and again, ~15 % of the
start-up of ``mlyard run``. Exit: tearing the interpreter down frees all of them one by one
(~20 ms) for memory the operating system takes back anyway.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from typing import NoReturn

#: Until a command's work begins the collector hardly runs (it still does, so nothing grows
#: without bound if a command never settles).
START_UP_THRESHOLDS = (100_000, 50, 50)
_DEFAULT_THRESHOLDS = gc.get_threshold()


def begin_start_up(argv: list[str]) -> None:
    """First thing in ``main``. For ``mlyard run`` this also starts the local backend's fork
    server: its imports take as long as the run's own, and the first step waits for it. The
    default backend is local; a run that turns out to use another one stops it again
    (``warm_up_backend``)."""
    gc.set_threshold(*START_UP_THRESHOLDS)
    command = next((argument for argument in argv[1:] if not argument.startswith("-")), None)
    if command == "run" and "--help" not in argv:
        from mlyard.backends.local import fork_server

        fork_server.prestart()


def settle_after_start_up() -> None:
    """Where a long-running command begins its work: what start-up created is frozen (never
    scanned again) and the collector runs as usual from here on."""
    gc.freeze()
    gc.set_threshold(*_DEFAULT_THRESHOLDS)


def exit_process(status: str | int | None) -> NoReturn:
    """End the process as ``sys.exit(status)`` would, skipping the interpreter's teardown.

    Exit handlers run and the standard streams are flushed first. When a thread that is not a
    daemon still runs (a normal exit would wait for it), this is an ordinary ``sys.exit``."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not thread.daemon for thread in others):
        sys.exit(status)
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:  # sys.exit("message") prints the message and exits with 1
        print(status, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # logging's flush, tempfile clean-up and the like
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to save
            stream.flush()
    os._exit(code)
