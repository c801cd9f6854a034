"""The MLflow UI on the embedded (or configured) tracking store, on loopback only.

For a store mlyard reaches directly (SQLite under MLYARD_HOME, a database URL) it runs
``mlflow ui`` on 127.0.0.1; for an http(s) tracking server there is nothing to start: its own
UI is at its URL. The UI runs in its own process group (MLflow starts uvicorn as a child), so
stopping it stops all of it.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlyard.errors import ConfigError, TrackingError
from mlyard.settings import Settings
from mlyard.tracking.mlflow_store import embedded_artifact_root, is_http_uri, sqlite_path

DEFAULT_UI_PORT = 5000
LOOPBACK_HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class UiPlan:
    """What ``mlyard ui`` does: run ``command`` and open ``url``, or just show ``url``."""

    url: str
    command: tuple[str, ...] | None  # None: a tracking server already serves its UI
    environment: tuple[tuple[str, str], ...] = ()


def plan_ui(
    settings: Settings,
    port: int = DEFAULT_UI_PORT,
    host: str = LOOPBACK_HOST,
    python: str = sys.executable,
) -> UiPlan:
    """The MLflow UI for ``settings.tracking_uri``.

    Raises ``ConfigError`` when tracking is off, when ``host`` is not a loopback address (the
    UI has no authentication) or when ``port`` is taken.
    """
    uri = settings.tracking_uri
    if uri is None:
        raise ConfigError(
            "Tracking is disabled (tracking.uri = 'none'), so there is no MLflow UI to open.",
            hint="Set tracking.uri in mlyard.toml or MLYARD_TRACKING__URI, or remove it to use "
            "the embedded store under MLYARD_HOME.",
        )
    if is_http_uri(uri):
        return UiPlan(url=uri.rstrip("/"), command=None)
    _require_loopback(host)
    _require_free_port(host, port)
    command = [
        python, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    artifacts = embedded_artifact_root(uri)
    if artifacts is not None:
        # New uploads through the UI go beside the store, not to ./mlartifacts.
        command += ["--artifacts-destination", str(artifacts)]
    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    # The UI needs no background job runner (LLM judges, trace archival): fewer processes.
    environment = (("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),)
    url_host = f"[{host}]" if ":" in host else host
    return UiPlan(url=f"http://{url_host}:{port}", command=tuple(command), environment=environment)


def start_ui(plan: UiPlan) -> subprocess.Popen[bytes]:
    """Start the UI of ``plan`` in its own process group; returns at once."""
    if plan.command is None:
        raise ConfigError(f"The MLflow UI is served by the tracking server at {plan.url}.")
    return subprocess.Popen(
        plan.command,
        env={**os.environ, **dict(plan.environment)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_ready(
    plan: UiPlan, process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    """Block until the UI answers ``/health``; ``TrackingError`` if it exits or times out."""
    import urllib.error  # here, not at the top: every CLI command imports this module
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TrackingError(
                f"The MLflow UI exited with code {process.returncode} before it was ready.",
                hint="Its output above says why; `mlyard --debug ui` shows more.",
            )
        try:
            with urllib.request.urlopen(f"{plan.url}/health", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TrackingError(
        f"The MLflow UI did not answer at {plan.url} within {timeout:.0f} s.",
        hint="A first start migrates the store and can be slow; try again.",
    )


def stop_ui(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop the UI's whole process group: SIGTERM, then SIGKILL after ``timeout``."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=timeout)
            _wait_for_group_exit(process.pid, timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def run_ui(plan: UiPlan, on_ready: Callable[[str], None]) -> int:
    """Run the UI in the foreground until it exits or the user interrupts it (then stop it
    and re-raise ``KeyboardInterrupt``); returns its exit code."""
    process = start_ui(plan)
    try:
        wait_until_ready(plan, process)
        on_ready(plan.url)
        return process.wait()
    finally:
        stop_ui(process)


def _wait_for_group_exit(group: int, timeout: float) -> None:
    """Children (uvicorn) may outlive the MLflow parent by a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise subprocess.TimeoutExpired(f"process group {group}", timeout)


def _require_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"The MLflow UI only binds loopback addresses, not {host!r}: it has no "
            "authentication and would expose every run and model.",
            hint="Use 127.0.0.1 and reach it through an SSH tunnel (ssh -L 5000:127.0.0.1:5000 "
            "HOST), or run an MLflow server with authentication and point tracking.uri at it.",
        )


def _require_free_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"Port {port} on {host} is not free for the MLflow UI: {exc.strerror}.",
                hint="Pass another one with --port.",
            ) from exc
