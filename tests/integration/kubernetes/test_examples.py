"""Both examples run unchanged with ``--backend`` on the fake cluster against S3: the quickstart
(and ``mlyard runs logs`` shows a step's output), and the FashionMNIST CNN, whose pods read the
data set from the store themselves and whose model is registered with its signature."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json
from tests.e2e.idx_data import write_idx_dataset
from tests.e2e.test_fmnist import _assert_registered_with_signature
from tests.integration.kubernetes.conftest import NAMESPACE, S3_VARIABLES, profile_fields

pytestmark = pytest.mark.integration


def _project(directory: Path, kube: dict[str, str], tracking: bool, **fields: Any) -> Path:
    """A working directory whose mlyard.toml has the [backends.cluster] profile."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [] if tracking else ["[tracking]", 'uri = "none"', ""]
    lines.append("[backends.cluster]")
    profile = profile_fields(kube, **fields)
    lines += [f"{key} = {json.dumps(value)}" for key, value in profile.items()]
    (directory / "mlyard.toml").write_text("\n".join(lines) + "\n")
    return directory


def _store_env(s3: dict[str, str], prefix: str) -> dict[str, str]:
    return {
        "MLYARD_STORAGE__ARTIFACTS": f"s3://{s3['S3_BUCKET']}/{prefix}-{uuid.uuid4().hex[:8]}",
        "MLYARD_STORAGE__ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        **{key: s3[key] for key in S3_VARIABLES},
    }


def test_the_quickstart_runs_unchanged_on_kubernetes(
    kube: dict[str, str], s3: dict[str, str], credentials_secret: str, tmp_path: Path
) -> None:
    project = _project(tmp_path, kube, tracking=False)
    env = _store_env(s3, "quickstart")
    view = mlyard_json(
        "run",
        str(EXAMPLES / "quickstart" / "pipeline.py"),
        "--backend",
        "cluster",
        cwd=project,
        env=env,
        timeout=600,
    )
    assert view["state"] == "SUCCEEDED", view.get("error")
    assert view["metrics"]["evaluate.accuracy"] >= 0.8
    assert {s["state"] for s in view["steps"]} == {"SUCCEEDED"}
    logs = mlyard("runs", "logs", view["id"], "train", cwd=project, env=env)
    assert logs.returncode == 0, logs.stderr


@pytest.fixture
def data_secret(core_api: Any, s3: dict[str, str]) -> Iterator[str]:
    """A Secret with the store's credentials and its endpoint (``AWS_ENDPOINT_URL``, which
    boto3 and s3fs read), so a step's own ``s3://`` reads reach SeaweedFS, as a user sets it
    up for an S3 server that is not AWS."""
    name = f"s3-endpoint-{uuid.uuid4().hex[:6]}"
    data = {key: s3[key] for key in S3_VARIABLES}
    data["AWS_ENDPOINT_URL"] = s3["S3_ENDPOINT_URL"]
    core_api.create_namespaced_secret(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data},
    )
    yield name
    core_api.delete_namespaced_secret(name, NAMESPACE)


def test_fmnist_runs_unchanged_on_kubernetes(
    kube: dict[str, str],
    s3: dict[str, str],
    data_secret: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import s3fs

    # The pods read the data set from the object store, as on a cluster with no shared disk.
    files = write_idx_dataset(tmp_path / "fashion-mnist")
    data = f"{s3['S3_BUCKET']}/fmnist-data-{uuid.uuid4().hex[:8]}"
    filesystem = s3fs.S3FileSystem(
        key=s3["AWS_ACCESS_KEY_ID"],
        secret=s3["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": s3["S3_ENDPOINT_URL"]},
    )
    for path in files.iterdir():
        filesystem.put_file(str(path), f"{data}/{path.name}")
    project = _project(
        tmp_path / "project", kube, tracking=True, artifact_credentials_secret=data_secret
    )
    fmnist = mlyard_json(
        "run",
        str(EXAMPLES / "fmnist" / "pipeline.py"),
        "--backend",
        "cluster",
        "-p",
        f"data=s3://{data}",
        "-p",
        "epochs=3",
        cwd=project,
        env=_store_env(s3, "fmnist"),
        timeout=600,
    )
    assert fmnist["state"] == "SUCCEEDED", fmnist.get("error")
    assert fmnist["metrics"]["evaluate.accuracy"] >= 0.8
    assert fmnist["metrics"]["preprocess.train_examples"] == 2000
    assert {s["state"] for s in fmnist["steps"]} == {"SUCCEEDED"}
    # Each step ran as a Job: its manifest is what the run recorded for it.
    assert all("kind: Job" in (s["submit_script"] or "") for s in fmnist["steps"])
    assert "fmnist-cnn version 1" in fmnist["models"]
    _assert_registered_with_signature(monkeypatch)
