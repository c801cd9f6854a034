"""The kubernetes profile: defaults, and bad values refused naming the field."""

from __future__ import annotations

import pytest

from mlyard.backends.kubernetes.profile import load_kubernetes_profile
from mlyard.errors import ConfigError
from mlyard.settings import BackendProfile


def load(**fields: object) -> object:
    return load_kubernetes_profile("gpu", BackendProfile(type="kubernetes", **fields))


def test_defaults() -> None:
    profile = load_kubernetes_profile(
        "gpu", BackendProfile(type="kubernetes", image="mlyard:1", schedule_timeout="5m")
    )
    assert profile.namespace == "default" and profile.gpu_sharing == "exclusive"
    assert profile.schedule_timeout == 300.0 and profile.tolerate_gpu_taint


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "image"),
        ({"image": "x", "namespace": "Bad_NS"}, "namespace"),
        ({"image": "x", "gpu_sharing": "mps"}, "gpu_sharing"),
        ({"image": "x", "mig_profiles": ["big"]}, "mig_profiles"),
        ({"image": "x", "in_cluster": True, "context": "kind"}, "in_cluster"),
        ({"image": "x", "replicas": 2}, "replicas"),
    ],
)
def test_bad_values_name_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**fields)
    assert named in str(caught.value) and "[backends.gpu]" in str(caught.value)
