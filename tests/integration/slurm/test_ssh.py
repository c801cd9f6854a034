"""SSH done right: strict host keys, clear refusals, and a dropped connection survived."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import BackendError
from mlyard.models.backends import JobState
from tests.integration.slurm.conftest import BackendFactory, make_task, wait_for_end

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def test_an_unknown_host_key_is_refused_with_the_command_to_trust_it(
    make_backend: BackendFactory, cluster: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = make_backend(known_hosts=str(empty))
    with pytest.raises(BackendError, match="not trusted") as refused:
        backend.shell.run("true")
    hint = refused.value.hint or ""
    assert f"ssh-keyscan -p {cluster['SSH_PORT']} 127.0.0.1 >> {empty}" in hint


def test_a_changed_host_key_is_refused(
    make_backend: BackendFactory, cluster: dict[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "known_hosts"
    # Another host's key for this address: what a man in the middle would present.
    wrong.write_text(
        f"[127.0.0.1]:{cluster['SSH_PORT']} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    with pytest.raises(BackendError, match="not trusted"):
        make_backend(known_hosts=str(wrong)).shell.run("true")


def test_refused_authentication_and_unreachable_hosts_are_clear(
    make_backend: BackendFactory, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(BackendError, match=r"authentication to .* was refused"):
        make_backend(identity_file=str(stranger)).shell.run("true")
    with pytest.raises(BackendError, match="Cannot reach the login node"):
        make_backend(port=1, connect_timeout=3).shell.run("true")


def test_a_dropped_connection_during_a_job_is_survived(
    make_backend: BackendFactory, cluster: dict[str, str], store: ArtifactStore
) -> None:
    backend = make_backend()
    handle = backend.submit(make_task(store, "nap", {"seconds": 4}))
    listener = psutil.Process(int(cluster["SSH_PID"]))
    sessions = listener.children()
    assert sessions, "the backend's SSH session should be open"
    for session in sessions:
        session.send_signal(signal.SIGKILL)  # the connection drops under the backend
    time.sleep(0.5)
    status = wait_for_end(backend, handle)
    assert status.state is JobState.SUCCEEDED
    assert backend.shell.connections_opened == 2  # type: ignore[attr-defined]
