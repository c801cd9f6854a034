"""Running mlyard's CLI on the benchmark flows, each run isolated in a fresh ``MLYARD_HOME``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from measure import base_environment

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MLYARD_FLOWS = HERE / "flows" / "mlyard_flows.py"
MLYARD_CLI = Path(sys.executable).with_name("mlyard")


def mlyard_environment(workdir: Path, *, tracking: bool) -> dict[str, str]:
    """Environment for one mlyard run: metadata, artifacts and MLflow store inside ``workdir``.

    ``tracking=False`` sets ``MLYARD_TRACKING__URI=none`` (orchestration alone); otherwise the
    default MLflow tracking on SQLite under ``MLYARD_HOME`` is on.
    """
    env = base_environment("MLYARD_")
    env.update(HOME=str(workdir), MLYARD_HOME=str(workdir / "mlyard-home"))
    if not tracking:
        env["MLYARD_TRACKING__URI"] = "none"
    return env


def mlyard_command(target: str, params: dict[str, int], *extra: str) -> list[str]:
    """``mlyard run TARGET -p name=value ... --json``; ``target`` is ``PATH[:PIPELINE]``."""
    command = [str(MLYARD_CLI), "run", target, "--json", *extra]
    for name, value in params.items():
        command += ["-p", f"{name}={value}"]
    return command


def flow_target(flow: str) -> str:
    """The ``PATH:PIPELINE`` of one of the benchmark flows."""
    return f"{MLYARD_FLOWS}:{flow}"


def mlyard_steps(flow: str, n: int) -> int:
    """Steps of the mlyard flows: the fan-out adds a source and a join step."""
    return n + 2 if flow == "fanout" else n


def checked_run_view(stdout: str, *, expected_steps: int, expected_state: str = "SUCCEEDED") -> Any:
    """Parse ``--json`` output and make sure the run did what the benchmark claims it did."""
    view = json.loads(stdout)
    if view["state"] != "SUCCEEDED":
        raise RuntimeError(f"mlyard run ended {view['state']}: {view.get('error')}")
    states = [step["state"] for step in view["steps"]]
    if len(states) != expected_steps or any(state != expected_state for state in states):
        counts = {state: states.count(state) for state in set(states)}
        raise RuntimeError(
            f"expected {expected_steps} steps {expected_state}, got {len(states)}: {counts}"
        )
    return view
