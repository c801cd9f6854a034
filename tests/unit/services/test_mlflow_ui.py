"""`mlyard ui`: the MLflow UI on loopback only, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mlyard.cli.ui import register
from mlyard.errors import ConfigError
from mlyard.services.mlflow_ui import plan_ui
from mlyard.settings import Settings, load_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(tracking={"uri": f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"})


def test_plan_runs_mlflow_ui_on_loopback_beside_the_store(
    settings: Settings, tmp_path: Path
) -> None:
    port = _free_port()
    plan = plan_ui(settings, port=port, python="python3")
    assert plan.url == f"http://127.0.0.1:{port}"
    assert plan.command is not None
    command = list(plan.command)
    assert command[:4] == ["python3", "-m", "mlflow", "ui"]
    assert command[command.index("--backend-store-uri") + 1] == settings.tracking_uri
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == str(port)
    artifacts = command[command.index("--artifacts-destination") + 1]
    assert Path(artifacts) == tmp_path / "home" / "mlflow-artifacts"
    assert (tmp_path / "home").is_dir()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.org", "::"])
def test_other_hosts_than_loopback_are_refused(settings: Settings, host: str) -> None:
    with pytest.raises(ConfigError, match="only binds loopback addresses") as caught:
        plan_ui(settings, port=_free_port(), host=host)
    assert caught.value.hint is not None and "ssh -L" in caught.value.hint


def test_ipv6_loopback_is_bracketed_in_the_url(settings: Settings) -> None:
    try:
        port = _free_port()
        plan = plan_ui(settings, port=port, host="::1")
    except ConfigError as error:  # a machine without IPv6 on lo: the port check says so
        assert "not free" in error.message
        return
    assert plan.url == f"http://[::1]:{port}"


def test_a_busy_port_is_refused_with_the_fix(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"Port {port} on 127.0.0.1 is not free") as caught:
            plan_ui(settings, port=port)
    assert caught.value.hint == "Pass another one with --port."


def test_a_tracking_server_has_its_own_ui() -> None:
    plan = plan_ui(load_settings(tracking={"uri": "http://127.0.0.1:5999/"}))
    assert (plan.url, plan.command) == ("http://127.0.0.1:5999", None)


def test_no_ui_without_tracking() -> None:
    with pytest.raises(ConfigError, match="Tracking is disabled"):
        plan_ui(load_settings(tracking={"uri": "none"}))


def _ui_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Make `ui` a subcommand, as in the real `mlyard` app."""

    register(app)
    return app


def test_cli_prints_the_url_of_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLYARD_TRACKING__URI", "http://127.0.0.1:5999")
    result = CliRunner().invoke(_ui_app(), ["ui"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:5999" in result.output


_RUN_UI = """
import sys
import typer
from mlyard.cli.ui import register
app = typer.Typer()
app.callback()(lambda: None)
register(app)
app(sys.argv[1:])
"""


@pytest.fixture
def ui_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLYARD_HOME": str(tmp_path / "home"),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_UI, "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


def test_ui_serves_the_embedded_store_and_ctrl_c_stops_all_of_it(
    ui_process: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    process, port = ui_process
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "MLflow UI at" in line:
            break
    assert f"MLflow UI at http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        assert response.status == 200

    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)

    assert process.returncode == 0, rest
    assert "Stopped the MLflow UI." in rest
    assert (tmp_path / "home" / "mlflow.db").exists()
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()
    deadline = time.monotonic() + 5
    while True:  # nothing of the UI (uvicorn included) listens any more
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.monotonic() < deadline, "the UI still listens after Ctrl-C"
        time.sleep(0.1)
