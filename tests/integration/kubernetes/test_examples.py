"""The quickstart example runs unchanged with ``--backend`` on the fake cluster against S3, and
``mlyard runs logs`` shows a step's output."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json
from tests.integration.kubernetes.conftest import S3_VARIABLES, profile_fields

pytestmark = pytest.mark.integration


def test_the_quickstart_runs_unchanged_on_kubernetes(
    kube: dict[str, str], s3: dict[str, str], credentials_secret: str, tmp_path: Path
) -> None:
    fields = profile_fields(kube)
    lines = ["[tracking]", 'uri = "none"', "", "[backends.cluster]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    (tmp_path / "mlyard.toml").write_text("\n".join(lines) + "\n")
    env = {
        "MLYARD_STORAGE__ARTIFACTS": f"s3://{s3['S3_BUCKET']}/quickstart-{uuid.uuid4().hex[:8]}",
        "MLYARD_STORAGE__ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        **{key: s3[key] for key in S3_VARIABLES},
    }
    view = mlyard_json(
        "run",
        str(EXAMPLES / "quickstart" / "pipeline.py"),
        "--backend",
        "cluster",
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert view["state"] == "SUCCEEDED", view.get("error")
    assert view["metrics"]["evaluate.accuracy"] >= 0.8
    assert {s["state"] for s in view["steps"]} == {"SUCCEEDED"}
    logs = mlyard("runs", "logs", view["id"], "train", cwd=tmp_path, env=env)
    assert logs.returncode == 0, logs.stderr
