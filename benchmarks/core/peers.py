"""The peers mlyard is measured against: Metaflow's local runtime and Prefect 3.

They live in their own virtualenv (``benchmarks/.venv-peers``, created on first use) so their
dependencies never meet mlyard's. Metaflow's graph is static, so its flows are generated as source
files with the requested number of steps; Prefect's flows take ``n`` as a parameter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from measure import base_environment

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE.parent / ".venv-peers"
PEER_REQUIREMENTS = (
    "metaflow>=2.12",
    "prefect>=3,<4",
    # Prefect 3.8's server passes Body(min_items=...), which FastAPI >= 0.150 no longer accepts.
    "fastapi>=0.139,<0.150",
)
PREFECT_FLOWS = HERE / "flows" / "prefect_flows.py"


def peers_python() -> Path:
    """The interpreter of the peers' virtualenv; creates and fills it when missing."""
    python = PEERS_VENV / "bin" / "python"
    if not _has_peers(python):
        print(f"creating {PEERS_VENV} with {', '.join(PEER_REQUIREMENTS)} ...", flush=True)
        # The base interpreter mlyard's venv was made from: same Python for every tool.
        base = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(base), "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True
        )
    return python


def _has_peers(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import metaflow, prefect.server.api.server"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def peer_versions(python: Path) -> dict[str, str]:
    """Installed versions of the peers, for the report."""
    script = (
        "from importlib.metadata import version\nprint(version('metaflow'), version('prefect'))"
    )
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True)
    metaflow_version, prefect_version = out.stdout.split()
    return {"metaflow": metaflow_version, "prefect": prefect_version}


def peer_environment(workdir: Path) -> dict[str, str]:
    """Environment for one peer run: every piece of state inside ``workdir``."""
    env = base_environment("PREFECT_", "METAFLOW_", "MLYARD_")
    env.update(
        HOME=str(workdir),
        USER=env.get("USER", "bench"),
        METAFLOW_USER="bench",
        METAFLOW_HOME=str(workdir / "metaflow-config"),
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(workdir),
        METAFLOW_DEFAULT_METADATA="local",
        METAFLOW_DEFAULT_DATASTORE="local",
        PREFECT_HOME=str(workdir / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        # Its default 20 s is too short on a loaded 2-core machine: the run then fails.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        DO_NOT_TRACK="1",
    )
    return env


def metaflow_chain_source(n: int) -> str:
    """A Metaflow flow of exactly ``n`` steps in a line (``start``, n-2 steps, ``end``)."""
    if n < 2:
        raise ValueError("a Metaflow flow needs at least start and end")
    names = ["start", *(f"step_{i}" for i in range(1, n - 1)), "end"]
    lines = [
        "from metaflow import FlowSpec, step",
        "",
        "",
        "class ChainFlow(FlowSpec):",
    ]
    for index, name in enumerate(names):
        body = "self.value = 0" if index == 0 else "self.value = self.value + 1"
        lines += ["    @step", f"    def {name}(self):", f"        {body}"]
        if name != "end":
            lines.append(f"        self.next(self.{names[index + 1]})")
        lines.append("")
    lines += ["", 'if __name__ == "__main__":', "    ChainFlow()", ""]
    return "\n".join(lines)


METAFLOW_FANOUT_SOURCE = """\
from metaflow import FlowSpec, Parameter, step


class FanoutFlow(FlowSpec):
    n = Parameter("n", default=50, type=int)

    @step
    def start(self):
        self.value = 0
        self.indexes = list(range(self.n))
        self.next(self.branch, foreach="indexes")

    @step
    def branch(self):
        self.result = self.value + self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(branch.result for branch in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FanoutFlow()
"""


def metaflow_steps(flow: str, n: int) -> int:
    """Tasks Metaflow runs for ``flow`` of size ``n``: the fan-out adds start, join and end."""
    return n if flow == "chain" else n + 3


def prefect_steps(flow: str, n: int) -> int:
    """Task runs of the Prefect flows: the fan-out adds a source and a join task."""
    return n if flow == "chain" else n + 2


def write_metaflow_flow(flow: str, n: int, workdir: Path) -> Path:
    """Write the Metaflow flow file for ``flow`` into ``workdir``; its path."""
    path = workdir / f"metaflow_{flow}.py"
    path.write_text(metaflow_chain_source(n) if flow == "chain" else METAFLOW_FANOUT_SOURCE)
    return path


def metaflow_command(python: Path, flow_file: Path, flow: str, n: int) -> list[str]:
    """``python flow.py run`` on the local runtime, datastore and metadata."""
    command = [str(python), str(flow_file), "--no-pylint", "--quiet", "run"]
    return command + (["--n", str(n)] if flow == "fanout" else [])


def prefect_command(python: Path, flow: str, n: int) -> list[str]:
    """Run one Prefect flow in a fresh process (Prefect starts its ephemeral API server)."""
    return [str(python), str(PREFECT_FLOWS), flow, str(n)]
