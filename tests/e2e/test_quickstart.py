"""The quickstart example through the CLI: a real run, a cached re-run, the registered model."""

from __future__ import annotations

import pytest

from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json

pytestmark = pytest.mark.e2e
QUICKSTART = str(EXAMPLES / "quickstart" / "pipeline.py")


def test_quickstart_runs_caches_and_registers() -> None:
    done = mlyard("run", QUICKSTART)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "SUCCEEDED" in done.stdout
    assert "Registered model: digits-classifier version 1" in done.stdout

    first = mlyard_json("runs", "ls")
    assert [r["state"] for r in first] == ["SUCCEEDED"]
    view = mlyard_json("runs", "show", first[0]["id"])
    assert {s["name"]: s["state"] for s in view["steps"]} == {
        "load_digits": "SUCCEEDED",
        "split": "SUCCEEDED",
        "train": "SUCCEEDED",
        "evaluate": "SUCCEEDED",
        "register": "SUCCEEDED",
    }
    assert view["metrics"]["evaluate.accuracy"] >= 0.8
    assert view["steps"][2]["usage"]["cpu_seconds"] > 0
    assert view["steps"][2]["outputs"]["output"]["materializer"] == "joblib"
    assert view["mlflow_run_id"]

    again = mlyard_json("run", QUICKSTART)
    assert again["state"] == "SUCCEEDED"
    assert {s["state"] for s in again["steps"]} == {"CACHED"}
    assert {s["cached_from_run_id"] for s in again["steps"]} == {first[0]["id"]}

    changed = mlyard_json("run", QUICKSTART, "-p", "c=0.5")
    states = {s["name"]: s["state"] for s in changed["steps"]}
    assert states["split"] == "CACHED"
    assert states["train"] == "SUCCEEDED"

    models = mlyard_json("models", "show", "digits-classifier")
    assert len(models["versions"]) == 2


def test_failing_gate_message_reaches_the_user_and_exit_code_is_non_zero() -> None:
    done = mlyard("run", QUICKSTART, "-p", "gate=0.999")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Quality gate failed" in output
    assert "below 1.00" in output
    assert "Traceback" not in output


def test_no_cache_runs_every_step() -> None:
    assert mlyard("run", QUICKSTART).returncode == 0
    view = mlyard_json("run", QUICKSTART, "--no-cache")
    assert {s["state"] for s in view["steps"]} == {"SUCCEEDED"}
