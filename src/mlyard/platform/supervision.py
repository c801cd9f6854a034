"""A replica process that outlives its supervisor stops: it must never run on unwatched.

``mlyard serve`` and ``mlyard consume`` with ``--replicas N`` start N processes and forward
signals to them. If the supervisor itself is killed (SIGKILL, the OOM killer), nothing forwards
anything: each replica notices it has been re-parented and stops itself as on SIGTERM, so a
consumer finishes and acknowledges its batch first and a server drains.
"""

from __future__ import annotations

import os
import signal
import threading

#: How often a replica looks at its parent (a poll of getppid: no system load to speak of).
CHECK_SECONDS = 1.0


def stop_when_orphaned(supervisor: int, check_seconds: float = CHECK_SECONDS) -> None:
    """Send this process SIGTERM once ``supervisor``, the pid that started it, is no longer
    its parent. The pid is passed in rather than read here: a supervisor killed while the
    replica was still importing has left already, and a supervisor may itself be pid 1 (the
    first process of a container)."""

    def watch() -> None:
        while os.getppid() == supervisor:
            stopped.wait(check_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    stopped = threading.Event()  # never set: the thread lives as long as the process
    threading.Thread(target=watch, name="mlyard-orphan-watch", daemon=True).start()
