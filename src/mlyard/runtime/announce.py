"""How a step process makes itself findable: a process name and, if asked, a pid file."""

from __future__ import annotations

import os
from pathlib import Path

#: Written with the step process's pid before anything else, when set (the local backend's
#: way of finding a step again after an orchestrator restart).
PID_FILE_VARIABLE = "MLYARD_PID_FILE"
#: The process name (Linux comm) step processes give themselves.
STEP_PROCESS_NAME = "mlyard-step"


def announce_process() -> None:
    """Name this process ``mlyard-step`` (Linux) and write the pid file if asked to."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, ctypes.c_char_p(STEP_PROCESS_NAME.encode()), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
    pid_file = os.environ.get(PID_FILE_VARIABLE)
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
