"""With only the base install, a command that needs an optional extra says so in one line.

One virtual environment per test session gets ``pip install -e <this checkout>`` and no extras
(mlflow is a base dependency, so this takes about a minute from the pip cache). Each command then
runs in it as a user would run it, and must end with a non-zero exit code and exactly one line
on stderr naming the ``pip install 'mlyard[...]'`` to run, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli import REPO

pytestmark = pytest.mark.e2e

OK_PIPELINE = """\
from mlyard import pipeline, step

@step
def one() -> int:
    return 1

@pipeline
def ok() -> None:
    one()
"""

GPU_PIPELINE = """\
from mlyard import Resources, pipeline, step

@step(resources=Resources(gpus=1))
def train() -> int:
    return 1

@pipeline
def gpu() -> None:
    train()
"""


@pytest.fixture(scope="session")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtual environment holding mlyard without any extra."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # This environment's pip installs into the new one; --no-compile saves half the time.
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    done = subprocess.run(
        [*pip, "install", "-q", "--no-compile", "-e", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return python


def _fails_naming_extra(
    python: Path, cwd: Path, *args: str, extra: str, env: dict[str, str] | None = None
) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(env or {})
    done = subprocess.run(
        [str(python), "-m", "mlyard.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: "), output
    assert lines[0].endswith(f"pip install 'mlyard[{extra}]'"), output
    return lines[0]


def test_serve_needs_the_serve_extra(base_python: Path, tmp_path: Path) -> None:
    line = _fails_naming_extra(base_python, tmp_path, "serve", "models:/digits/1", extra="serve")
    assert "prometheus_client is not installed" in line  # what the issue saw as a traceback


@pytest.mark.parametrize(
    ("source", "decoder", "extra"),
    [
        ("sqlite:///queue.db?topic=in", "npy", "consume"),
        ("redis://127.0.0.1:6379/0?stream=in&group=g", "npy", "consume,redis"),
        ("kafka://127.0.0.1:9092?topic=in&group=g", "npy", "consume,kafka"),
        ("nats://127.0.0.1:4222?stream=S&subject=in&durable=d", "video", "consume,nats,video"),
    ],
)
def test_consume_names_its_extra_and_the_brokers(
    base_python: Path, tmp_path: Path, source: str, decoder: str, extra: str
) -> None:
    _fails_naming_extra(
        base_python,
        tmp_path,
        "consume",
        *("--source", source, "--sink", "sqlite:///queue.db?topic=out", "--model", "noop"),
        *("--dead-letter", "sqlite:///queue.db?topic=dead", "--decoder", decoder),
        extra=extra,
    )


def test_run_with_an_s3_store_postgres_slurm_kubernetes_or_a_gpu(
    base_python: Path, tmp_path: Path
) -> None:
    (tmp_path / "ok.py").write_text(OK_PIPELINE)
    (tmp_path / "gpu.py").write_text(GPU_PIPELINE)
    s3 = {"MLYARD_STORAGE__ARTIFACTS": "s3://bucket/x"}
    _fails_naming_extra(base_python, tmp_path, "run", "ok.py", extra="s3", env=s3)
    postgres = {"MLYARD_DATABASE__URL": "postgresql://mlyard@127.0.0.1:1/mlyard"}
    _fails_naming_extra(base_python, tmp_path, "run", "ok.py", extra="postgres", env=postgres)
    _fails_naming_extra(base_python, tmp_path, "run", "gpu.py", extra="gpu")
    (tmp_path / "mlyard.toml").write_text(
        '[backends.hpc]\ntype = "slurm"\nhost = "login.example.org"\ndata_route = "sftp"\n'
        '[backends.cluster]\ntype = "kubernetes"\nimage = "ghcr.io/example/mlyard:1"\n'
    )
    line = _fails_naming_extra(base_python, tmp_path, "run", "ok.py", "-b", "hpc", extra="slurm")
    assert "'hpc'" in line
    _fails_naming_extra(base_python, tmp_path, "run", "ok.py", "-b", "cluster", extra="k8s")
