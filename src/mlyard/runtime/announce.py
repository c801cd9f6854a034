"""How a step process makes itself findable: a process name and, if asked, a pid file."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

#: Written with the step process's pid before anything else, when set (the local backend's
#: way of finding a step again after an orchestrator restart).
PID_FILE_VARIABLE = "MLYARD_PID_FILE"
#: The process name (Linux comm) step processes give themselves.
STEP_PROCESS_NAME = "mlyard-step"
PR_SET_NAME = 15


@cache
def set_process_name() -> Callable[[bytes], object] | None:
    """A function that sets this process's name (Linux ``prctl``), or None where there is none.

    Resolving it costs ~0.5 ms (loading the C library): the fork server does it once."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    return lambda name: prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def announce_process() -> None:
    """Name this process ``mlyard-step`` (Linux) and write the pid file if asked to."""
    set_name = set_process_name()
    if set_name is not None:
        set_name(STEP_PROCESS_NAME.encode())
    pid_file = os.environ.get(PID_FILE_VARIABLE)
    if pid_file:
        Path(pid_file).write_bytes(str(os.getpid()).encode())
