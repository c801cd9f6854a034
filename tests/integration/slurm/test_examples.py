"""Both examples of the embedded core, unchanged, on the SLURM backend over SSH, by both data
routes: SFTP into the shared working directory, and S3 read and written by the job itself."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cli import EXAMPLES, mlyard_json
from tests.e2e.idx_data import write_idx_dataset
from tests.integration.slurm.conftest import profile_fields

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def _project(tmp_path: Path, cluster: dict[str, str], route: str) -> Path:
    """A working directory whose mlyard.toml has the [backends.hpc] profile."""
    fields = profile_fields(
        cluster, data_route=route, remote_workdir=f"~/mlyard-examples-{uuid.uuid4().hex[:8]}"
    )
    lines = ["[tracking]", 'uri = "none"', "", "[backends.hpc]", 'type = "slurm"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    (tmp_path / "mlyard.toml").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.fixture(params=["sftp", "s3"])
def route_env(
    request: pytest.FixtureRequest, services: Callable[[str], dict[str, str]]
) -> tuple[str, dict[str, str]]:
    if request.param == "sftp":
        return "sftp", {}
    s3 = services("seaweedfs")
    return "s3", {
        "MLYARD_STORAGE__ARTIFACTS": f"s3://{s3['S3_BUCKET']}/examples-{uuid.uuid4().hex[:8]}",
        "MLYARD_STORAGE__ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        **{k: s3[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")},
    }


def test_both_examples_run_unchanged_on_slurm(
    cluster: dict[str, str], route_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    route, env = route_env
    project = _project(tmp_path, cluster, route)
    quickstart = mlyard_json(
        "run",
        str(EXAMPLES / "quickstart" / "pipeline.py"),
        "--backend",
        "hpc",
        cwd=project,
        env=env,
        timeout=600,
    )
    assert quickstart["state"] == "SUCCEEDED", quickstart.get("error")
    assert quickstart["metrics"]["evaluate.accuracy"] >= 0.8

    # The compute node reads the data itself: a directory the cluster user can read.
    shared = Path(tempfile.mkdtemp(prefix="mlyard-fmnist-"))
    try:
        data = write_idx_dataset(shared / "data")
        for path in (shared, data, *data.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        fmnist = mlyard_json(
            "run",
            str(EXAMPLES / "fmnist" / "pipeline.py"),
            "--backend",
            "hpc",
            "-p",
            f"data={data}",
            "-p",
            "epochs=3",
            cwd=project,
            env=env,
            timeout=600,
        )
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert fmnist["state"] == "SUCCEEDED", fmnist.get("error")
    assert fmnist["metrics"]["evaluate.accuracy"] >= 0.8
    assert all("#SBATCH" in (s["submit_script"] or "") for s in fmnist["steps"])
