"""The CLI's exit without interpreter teardown keeps what a normal exit guarantees."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_exit_handlers_run_and_buffered_output_is_flushed() -> None:
    done = _python(
        "import atexit, sys\n"
        "from mlyard.cli.lifecycle import exit_process\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "sys.stdout.write('buffered ')\n"
        "exit_process(3)\n"
    )
    assert done.returncode == 3
    assert done.stdout == "buffered handler ran\n"


@pytest.mark.parametrize(("status", "code"), [("None", 0), ("0", 0), ("'bad input'", 1)])
def test_the_status_means_what_it_means_for_sys_exit(status: str, code: int) -> None:
    done = _python(f"from mlyard.cli.lifecycle import exit_process\nexit_process({status})\n")
    assert done.returncode == code
    assert done.stderr == ("bad input\n" if code == 1 else "")


def test_a_running_thread_that_is_no_daemon_is_waited_for() -> None:
    done = _python(
        "import threading, time\n"
        "from mlyard.cli.lifecycle import exit_process\n"
        "def work():\n"
        "    time.sleep(0.5)\n"
        "    print('thread finished', flush=True)\n"
        "threading.Thread(target=work).start()\n"
        "exit_process(4)\n"
    )
    assert done.returncode == 4
    assert done.stdout == "thread finished\n"
