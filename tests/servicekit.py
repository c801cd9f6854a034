"""Start and stop the real services tests need, through scripts/services/<name>.sh.

A service is started once per test session, on 127.0.0.1 and a free port, and stopped by PID at
the end. ``start_service`` returns the KEY=VALUE pairs the script wrote to its env file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "scripts" / "services"
#: Services whose env file is not ``<name>.env`` (issue 16 names kube-fake's ``kube.env``).
ENV_FILES = {"kube-fake": "kube.env"}


def _script_environment() -> dict[str, str]:
    """The scripts run Python tools (mlflow, weed) from the interpreter running the tests."""
    environment = dict(os.environ)
    environment["PYTHON"] = sys.executable
    bin_dir = str(Path(sys.executable).parent)
    environment["PATH"] = bin_dir + os.pathsep + environment.get("PATH", "")
    return environment


class ServiceStartError(RuntimeError):
    """The service script failed; the message carries its output."""


def start_service(name: str, state_dir: Path, timeout: float = 300.0) -> dict[str, str]:
    script = SCRIPTS_DIR / f"{name}.sh"
    state_dir.mkdir(parents=True, exist_ok=True)
    for action in (["install"], ["start", str(state_dir)]):
        done = subprocess.run(
            ["bash", str(script), *action],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_script_environment(),
        )
        if done.returncode != 0:
            raise ServiceStartError(
                f"scripts/services/{name}.sh {' '.join(action)} failed "
                f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
    env: dict[str, str] = {}
    for line in (state_dir / ENV_FILES.get(name, f"{name}.env")).read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def stop_service(name: str, state_dir: Path) -> None:
    subprocess.run(
        ["bash", str(SCRIPTS_DIR / f"{name}.sh"), "stop", str(state_dir)],
        capture_output=True,
        timeout=120,
        check=False,
        env=_script_environment(),
    )
