"""How a step process makes itself findable: a process name and, if asked, a pid file."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

#: Written with the step process's pid before anything else, when set (the local backend's
#: way of finding a step again after an orchestrator restart).
PID_FILE_VARIABLE = "MLYARD_PID_FILE"
#: The process name (Linux comm) step processes give themselves.
STEP_PROCESS_NAME = "mlyard-step"


@cache
def process_library() -> Any:
    """The C library of this process (loading it costs ~0.5 ms: the fork server does it once)."""
    import ctypes

    return ctypes.CDLL(None)


def announce_process() -> None:
    """Name this process ``mlyard-step`` (Linux) and write the pid file if asked to."""
    try:
        import ctypes

        name = ctypes.c_char_p(STEP_PROCESS_NAME.encode())
        process_library().prctl(15, name, 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
    pid_file = os.environ.get(PID_FILE_VARIABLE)
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
