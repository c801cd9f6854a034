from __future__ import annotations

from mlyard.models.pipelines import StepNode
from mlyard.models.tasks import ArtifactRef
from mlyard.orchestration.cache import cache_key


def _node(**changes: object) -> StepNode:
    fields: dict[str, object] = {
        "name": "train",
        "function": "pipeline:train",
        "output_names": ["output"],
        "code_fingerprint": "abc",
    }
    fields.update(changes)
    return StepNode.model_validate(fields)


def _ref(digest: str) -> ArtifactRef:
    return ArtifactRef(digest=digest, materializer="numpy", type_name="ndarray", size_bytes=1)


def test_key_changes_with_code_params_inputs_and_environment() -> None:
    base = cache_key(_node(), {"lr": 0.1}, {"x": [_ref("sha256:" + "1" * 64)]})
    assert base == cache_key(_node(), {"lr": 0.1}, {"x": [_ref("sha256:" + "1" * 64)]})
    assert base != cache_key(
        _node(code_fingerprint="abd"), {"lr": 0.1}, {"x": [_ref("sha256:" + "1" * 64)]}
    )
    assert base != cache_key(_node(), {"lr": 0.2}, {"x": [_ref("sha256:" + "1" * 64)]})
    assert base != cache_key(_node(), {"lr": 0.1}, {"x": [_ref("sha256:" + "2" * 64)]})
    assert base != cache_key(
        _node(environment={"SEED": "1"}), {"lr": 0.1}, {"x": [_ref("sha256:" + "1" * 64)]}
    )
    assert base != cache_key(
        _node(requirements=["torch==2.1"]), {"lr": 0.1}, {"x": [_ref("sha256:" + "1" * 64)]}
    )
