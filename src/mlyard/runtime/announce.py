"""How a step process makes itself findable: a process name and, if asked, a journal line."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

#: When set, the step process appends ``{"pid": N}`` to this file before anything else (the
#: local backend's journal of the job, by which a restarted orchestrator finds the step again).
JOB_JOURNAL_VARIABLE = "MLYARD_JOB_JOURNAL"
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


def append_to_journal(path: str | os.PathLike[str], line: bytes) -> None:
    """Append one whole line in a single write: appends by several processes to a local file
    do not interleave, and a crash leaves at most the last line cut short."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def announce_process() -> None:
    """Name this process ``mlyard-step`` (Linux) and append its pid to the job's journal if
    asked to."""
    set_name = set_process_name()
    if set_name is not None:
        set_name(STEP_PROCESS_NAME.encode())
    journal = os.environ.get(JOB_JOURNAL_VARIABLE)
    if journal:
        append_to_journal(journal, b'{"pid": %d}\n' % os.getpid())
