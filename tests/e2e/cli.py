"""Running the real ``mlyard`` CLI in a subprocess, as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PROJECTS = Path(__file__).resolve().parent / "projects"


def mlyard(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mlyard.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def mlyard_json(*args: str, **kwargs: Any) -> Any:
    done = mlyard(*args, "--json", **kwargs)
    assert done.stdout, f"no output (exit {done.returncode}): {done.stderr}"
    return json.loads(done.stdout)


_spawned: list[subprocess.Popen[str]] = []


def stop_spawned() -> None:
    """Kill what ``spawn`` started and is still running (after a failed test)."""
    while _spawned:
        process = _spawned.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = dict(os.environ)
    environment.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "mlyard.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    _spawned.append(process)
    return process


def runs_of(marker_dir: Path, step: str) -> int:
    path = marker_dir / f"{step}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0
