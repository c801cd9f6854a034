"""``mlyard run --dry-run`` on a Kubernetes backend prints valid manifests and touches nothing:
no kubeconfig is read, no cluster reached, no run stored."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json

pytestmark = pytest.mark.e2e


def _project(tmp_path: Path, **fields: object) -> Path:
    lines = ["[tracking]", 'uri = "none"', "", "[backends.gpu]", 'type = "kubernetes"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    (tmp_path / "mlyard.toml").write_text("\n".join(lines) + "\n")
    return tmp_path


ENV = {
    "MLYARD_STORAGE__ARTIFACTS": "s3://mlyard/dry-run",
    "MLYARD_STORAGE__ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: never contacted
    # No kubeconfig anywhere: a dry run must not need the cluster.
    "KUBECONFIG": "/nonexistent/kubeconfig",
}


def test_dry_run_prints_one_valid_job_per_step_and_runs_nothing(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        image="registry.example.com/mlyard:0.1.0",
        namespace="ml",
        artifact_credentials_secret="s3-credentials",
    )
    done = mlyard(
        "run",
        str(EXAMPLES / "quickstart" / "pipeline.py"),
        "--backend",
        "gpu",
        "--dry-run",
        cwd=project,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    manifests = list(yaml.safe_load_all(done.stdout))
    assert [m["kind"] for m in manifests] == ["Job"] * 5
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.34.0", strict=True)
        assert manifest["metadata"]["namespace"] == "ml"
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
        assert container["command"][3].startswith("s3://mlyard/dry-run/tasks/dry-run.")
    steps = [m["metadata"]["labels"]["mlyard.io/step"] for m in manifests]
    assert steps == ["load_digits", "split", "train", "evaluate", "register"]
    assert mlyard_json("runs", "ls", cwd=project, env=ENV) == []


def test_dry_run_on_a_backend_that_has_no_manifests_says_so(tmp_path: Path) -> None:
    done = mlyard("run", str(EXAMPLES / "quickstart" / "pipeline.py"), "--dry-run", cwd=tmp_path)
    assert done.returncode != 0
    assert "--dry-run prints the manifests of a Kubernetes backend" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
