"""``log_model(..., input_example=...)`` inside a step: a few rows of the example travel with the
model through the artifact store, and an example that cannot describe an input is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from mlyard import log_model
from mlyard.artifacts.materializers import load_value, save_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import PipelineDefinitionError
from mlyard.models.tasks import TaskResult
from mlyard.tracking.context import MAX_EXAMPLE_ROWS, StepLog, install_step_log, reset_step_log


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def step_log(store: ArtifactStore) -> Iterator[StepLog]:
    """The step log the runtime installs, storing into a real artifact store."""
    step_log = StepLog(save_model=lambda value: save_value(store, value))
    token = install_step_log(step_log)
    yield step_log
    reset_step_log(token)


def _through_result(step_log: StepLog) -> TaskResult:
    """The step's result as the orchestrator reads it back from result.json."""
    now = datetime.now(UTC)
    result = TaskResult(
        attempt_id="a", status="succeeded", models=step_log.models, started_at=now, finished_at=now
    )
    return TaskResult.model_validate_json(result.model_dump_json())


def test_the_first_rows_of_the_example_travel_with_the_model(
    step_log: StepLog, store: ArtifactStore
) -> None:
    from sklearn.linear_model import LogisticRegression

    features = np.arange(200 * 4, dtype=np.float32).reshape(200, 4)
    model = LogisticRegression().fit(features, np.arange(200) % 2)

    log_model(model, "rows", input_example=features)

    (logged,) = _through_result(step_log).models
    assert logged.input_example is not None
    example = load_value(store, logged.input_example)
    np.testing.assert_array_equal(example, features[:MAX_EXAMPLE_ROWS])
    assert logged.input_example.size_bytes < features.nbytes


def test_a_dataframe_a_dict_of_arrays_and_a_torch_tensor_are_examples(
    step_log: StepLog, store: ArtifactStore
) -> None:
    import pandas as pd
    import torch

    frame = pd.DataFrame({"a": np.arange(9.0), "b": np.arange(9.0) * 2})
    named = {"image": np.zeros((8, 3, 2, 2), dtype=np.float32), "mask": np.ones((8, 2))}

    log_model(object(), "frame", flavor="pyfunc", input_example=frame)
    log_model(object(), "named", flavor="pyfunc", input_example=named)
    log_model(torch.nn.Linear(2, 1), "tensor", input_example=torch.ones(10, 2))

    frame_example, named_example, tensor_example = (
        load_value(store, m.input_example) for m in step_log.models if m.input_example
    )
    assert isinstance(frame_example, pd.DataFrame)
    assert list(frame_example["b"]) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert isinstance(named_example, dict)
    assert {k: v.shape for k, v in named_example.items()} == {
        "image": (5, 3, 2, 2),
        "mask": (5, 2),
    }
    assert isinstance(tensor_example, np.ndarray)
    assert tensor_example.shape == (5, 2)


def test_no_example_stores_none(step_log: StepLog) -> None:
    log_model(object(), "plain", flavor="pyfunc")

    assert step_log.models[0].input_example is None


@pytest.mark.parametrize(
    ("example", "says"),
    [
        ([[1.0, 2.0]], "is a list"),
        (np.float32(3.0), "is a float32 of shape ()"),
        (np.zeros((0, 4)), r"of shape \(0, 4\)"),
        ({"x": [1, 2]}, r"input_example\['x'\] is a list"),
    ],
)
def test_an_example_that_cannot_describe_an_input_is_refused(
    step_log: StepLog, example: object, says: str
) -> None:
    with pytest.raises(PipelineDefinitionError, match=says) as raised:
        log_model(object(), "bad", flavor="pyfunc", input_example=example)

    assert "input_example=x_test[:5]" in (raised.value.hint or "")
    assert step_log.models == []
