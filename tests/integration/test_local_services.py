"""``mlyard services`` on this machine: a real ``mlyard serve`` in the foreground of another
process is listed, shown, its log read, its scale refused with the fix, and stopped (SIGTERM,
it drains and exits 0) while ``logs -f`` prints its shutdown and ends with it; its record
goes with it, and a dead process's record is cleaned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.cli import mlyard, mlyard_json
from tests.integration.services_models import register_digits
from tests.integration.serving_processes import Server, free_port, wait_ready

pytestmark = pytest.mark.integration


def test_a_local_server_is_listed_shown_and_stopped(tmp_path: Path) -> None:
    model = register_digits(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLYARD_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(MLYARD_HOME=str(tmp_path / "home"), MLYARD_TRACKING__URI=model.tracking_uri)
    port = free_port()
    log = tmp_path / "serve.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlyard.cli", "serve", "models:/Digits_Classifier/1",
             "--port", str(port), "--replicas", "2", "--log-level", "info"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        (listed,) = mlyard_json("services", "ls", env=env, cwd=tmp_path)
        assert listed["name"] == "digits-classifier"
        assert listed["backend"] == "local"
        assert listed["pid"] == process.pid
        assert listed["replicas"] == 2
        assert listed["address"] == f"http://127.0.0.1:{port}"
        assert listed["model"] == "models:/Digits_Classifier/1"
        shown = mlyard_json("services", "show", "digits-classifier", env=env, cwd=tmp_path)
        assert len(shown["pods"]) == 2  # the replica processes
        logs = mlyard("services", "logs", "digits-classifier", env=env, cwd=tmp_path)
        assert "Serving Digits_Classifier version 1" in logs.stdout
        # The terminal still gets the output.
        assert "Serving Digits_Classifier version 1" in log.read_text()

        namesake = mlyard("serve", "models:/Digits_Classifier/1", "--port", str(free_port()),
                          "--name", "digits-classifier", env=env, cwd=tmp_path)  # fmt: skip
        assert namesake.returncode != 0
        assert "named 'digits-classifier' runs already" in namesake.stderr
        _a_second_unnamed_server_is_numbered(env, tmp_path)

        scale = mlyard("services", "scale", "digits-classifier", "3", env=env, cwd=tmp_path)
        assert scale.returncode != 0
        assert "--replicas N" in scale.stderr and "Traceback" not in scale.stderr

        follower = _follow(env, tmp_path)
        stopped = mlyard_json("services", "stop", "digits-classifier", env=env, cwd=tmp_path)
        assert stopped["exited"] is True
        assert process.wait(timeout=30) == 0  # drained
        # The follower printed the lines of the shutdown and ended with the service.
        assert follower.wait(timeout=30) == 0
        followed = (tmp_path / "follow.out").read_text()
        assert followed.count("Shutting down") == 2, followed  # both replicas
        assert mlyard_json("services", "ls", env=env, cwd=tmp_path) == []
        missing = mlyard("services", "show", "digits-classifier", env=env, cwd=tmp_path)
        assert missing.returncode != 0
        assert "No service named 'digits-classifier' runs on this machine" in missing.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _follow(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    """``services logs -f`` of the running server, once it has printed the lines so far."""
    out = tmp_path / "follow.out"
    with out.open("wb") as file:
        follower = subprocess.Popen(
            [sys.executable, "-m", "mlyard.cli", "services", "logs", "digits-classifier", "-f"],
            env={**os.environ, **env}, stdout=file, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while "Serving Digits_Classifier version 1" not in out.read_text():
        assert time.monotonic() < deadline and follower.poll() is None, out.read_text()
        time.sleep(0.1)
    assert "Shutting down" not in out.read_text()
    return follower


def _a_second_unnamed_server_is_numbered(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "twin.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlyard.cli", "serve", "models:/Digits_Classifier/1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:
        wait_ready(Server(process, f"http://127.0.0.1:{port}", log))
        listed = mlyard_json("services", "ls", env=env, cwd=tmp_path)
        assert sorted(s["name"] for s in listed) == ["digits-classifier", "digits-classifier-2"]
        stopped = mlyard_json("services", "stop", "digits-classifier-2", env=env, cwd=tmp_path)
        assert stopped["exited"] is True
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_record_of_a_killed_service_is_cleaned(tmp_path: Path) -> None:
    directory = tmp_path / "home" / "services" / "running"
    directory.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {
        "name": "ghost", "kind": "server", "model": "models:/x/1", "pid": dead.pid,
        "pid_started": 1.0, "replicas": 1, "address": "http://127.0.0.1:1",
        "started_at": "2026-01-01T00:00:00Z", "log": str(tmp_path / "ghost.log"),
    }  # fmt: skip
    (directory / "ghost.json").write_text(json.dumps(record))
    env = {"MLYARD_HOME": str(tmp_path / "home")}
    assert mlyard_json("services", "ls", env=env, cwd=tmp_path) == []
    assert not (directory / "ghost.json").exists()
