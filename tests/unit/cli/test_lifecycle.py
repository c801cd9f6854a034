"""The CLI process around its command: the fork server started first thing for `mlyard run`,
and an exit without interpreter teardown that keeps what a normal exit guarantees."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mlyard.backends.local import fork_server
from mlyard.backends.registry import warm_up_backend
from mlyard.cli.lifecycle import begin_start_up
from mlyard.settings import load_settings

DEFAULT_THRESHOLDS = gc.get_threshold()


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


@pytest.fixture
def no_prestarted_server() -> Iterator[None]:
    fork_server.discard_prestarted()
    yield
    fork_server.discard_prestarted()
    gc.set_threshold(*DEFAULT_THRESHOLDS)


@pytest.mark.usefixtures("no_prestarted_server")
def test_mlyard_run_starts_the_fork_server_first_thing_and_other_commands_do_not() -> None:
    begin_start_up(["mlyard", "runs", "ls"])
    assert fork_server._prestarted is None
    begin_start_up(["mlyard", "--debug", "run", "pipeline.py"])
    server = fork_server._prestarted
    assert server is not None and server.wait_ready()


@pytest.mark.usefixtures("no_prestarted_server")
def test_a_run_on_another_backend_stops_the_server_started_on_spec() -> None:
    begin_start_up(["mlyard", "run", "pipeline.py"])
    server = fork_server._prestarted
    assert server is not None
    settings = load_settings(backends={"hpc": {"type": "slurm", "host": "login.example.org"}})
    warm_up_backend("hpc", settings)
    assert fork_server._prestarted is None
    server._process.wait(timeout=10)
    assert not server.alive
