"""The embedded core against real services: PostgreSQL metadata, SeaweedFS S3 artifacts and an
MLflow tracking server, all started by the project's scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.artifacts.materializers import load_value, save_value
from mlyard.artifacts.store import ArtifactStore, read_uri
from mlyard.errors import ArtifactError
from tests.conftest import ServiceStarter
from tests.e2e.cli import EXAMPLES, PROJECTS, mlyard, mlyard_json

pytestmark = pytest.mark.integration
QUICKSTART = str(EXAMPLES / "quickstart" / "pipeline.py")


@pytest.fixture
def s3(services: ServiceStarter, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = services("seaweedfs")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    return env


def test_artifact_store_on_s3(s3: dict[str, str], tmp_path: Path) -> None:
    import numpy as np

    store = ArtifactStore("s3://mlyard/unit", endpoint_url=s3["S3_ENDPOINT_URL"])
    store.check_reachable()
    ref = save_value(store, np.arange(10))
    assert save_value(store, np.arange(10)).digest == ref.digest  # stored once
    assert store.exists(ref.digest)
    assert list(load_value(store, ref)) == list(range(10))  # type: ignore[call-overload]
    directory = tmp_path / "model"
    (directory / "sub").mkdir(parents=True)
    (directory / "sub" / "weights.bin").write_bytes(b"\1\2\3")
    loaded = load_value(store, save_value(store, directory))
    assert isinstance(loaded, Path)
    assert (loaded / "sub" / "weights.bin").read_bytes() == b"\1\2\3"
    uri = store.write_document("attempt-1.1", "task.json", b"{}")
    assert read_uri(uri, endpoint_url=s3["S3_ENDPOINT_URL"]) == b"{}"
    assert store.read_document("attempt-1.1", "result.json") is None


def test_unreachable_and_missing_bucket_are_explained(s3: dict[str, str]) -> None:
    with pytest.raises(ArtifactError, match="Could not reach"):
        ArtifactStore("s3://mlyard/x", endpoint_url="http://127.0.0.1:9").check_reachable()
    with pytest.raises(ArtifactError, match="does not exist"):
        ArtifactStore("s3://no-such-bucket", endpoint_url=s3["S3_ENDPOINT_URL"]).check_reachable()


def test_quickstart_with_postgres_s3_and_mlflow_server(
    services: ServiceStarter, s3: dict[str, str]
) -> None:
    postgres = services("postgres")
    tracking = services("mlflow")
    env = {
        "MLYARD_DATABASE__URL": postgres["DATABASE_URL"],
        "MLYARD_STORAGE__ARTIFACTS": "s3://mlyard/quickstart",
        "MLYARD_STORAGE__ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        "MLYARD_TRACKING__URI": tracking["MLFLOW_TRACKING_URI"],
    }
    view = mlyard_json("run", QUICKSTART, env=env, timeout=600)
    assert view["state"] == "SUCCEEDED", view.get("error")
    assert view["artifacts_url"] == "s3://mlyard/quickstart"
    assert view["mlflow_url"].startswith(tracking["MLFLOW_TRACKING_URI"])
    assert any(m.startswith("digits-classifier version") for m in view["models"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking["MLFLOW_TRACKING_URI"])
    parent = client.get_run(view["mlflow_run_id"])
    assert parent.data.tags["mlyard.run_id"] == view["id"]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    evaluate = next(r for r in children if r.data.tags["mlyard.step"] == "evaluate")
    assert evaluate.data.metrics["accuracy"] >= 0.8
    assert "usage.wall_seconds" in evaluate.data.metrics

    again = mlyard_json("run", QUICKSTART, env=env)
    assert {s["state"] for s in again["steps"]} == {"CACHED"}
    listed = mlyard_json("runs", "ls", env=env)
    assert len(listed) == 2


def test_unreachable_database_is_explained() -> None:
    done = mlyard(
        "runs", "ls", env={"MLYARD_DATABASE__URL": "postgresql://nobody@127.0.0.1:9/none"}
    )
    assert done.returncode == 1
    assert "Cannot reach the metadata database" in done.stderr
    assert "Traceback" not in done.stderr


def test_steps_log_live_to_a_reachable_mlflow_server(
    services: ServiceStarter, tmp_path: Path
) -> None:
    tracking = services("mlflow")
    markers = tmp_path / "markers"
    markers.mkdir()
    counting = str(PROJECTS / "counting" / "counting.py")
    env = {"MLYARD_TRACKING__URI": tracking["MLFLOW_TRACKING_URI"], "MLYARD_TRACKING__LIVE": "1"}
    view = mlyard_json(
        "run", f"{counting}:chain", "-p", f"marker_dir={markers}", "-p", "seconds=0.5", env=env
    )
    assert view["state"] == "SUCCEEDED", view.get("error")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking["MLFLOW_TRACKING_URI"])
    parent = client.get_run(view["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    slow = [r for r in children if r.data.tags.get("mlyard.step") == "slow"]
    assert len(slow) == 1  # the run the step created live is the one the orchestrator used
    history = client.get_metric_history(slow[0].info.run_id, "slept")
    assert [m.value for m in history] == [0.5]  # sent live once, not replayed again
    assert "usage.wall_seconds" in slow[0].data.metrics
