"""Every field of Resources is honoured or refused through capabilities, on every backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import (
    DEFAULT_HINTS,
    RESOURCE_CAPABILITIES,
    Backend,
    Capability,
    SubmittedTask,
    needed_capabilities,
)
from mlyard.errors import BackendError, ResourceError
from mlyard.models.backends import JobHandle, JobStatus
from mlyard.models.resources import Resources
from mlyard.settings import BackendProfile, Settings


class _Declared(Backend):
    """A backend that only declares capabilities: what the base class does with them."""

    def _submit(self, task: SubmittedTask) -> JobHandle:
        raise AssertionError("check_resources must not submit")

    def _status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        return {}

    def _cancel(self, handle: JobHandle) -> None:
        pass

    def _logs(self, handle: JobHandle, *, follow: bool) -> Iterator[str]:
        yield "a line"


def declared(tmp_path: Path, *capabilities: Capability, **hints: str) -> _Declared:
    backend = _Declared(
        "plain",
        BackendProfile(type="plain"),
        Settings(home=tmp_path),
        ArtifactStore(str(tmp_path / "artifacts")),
    )
    backend.capabilities = frozenset(capabilities)
    backend.capability_hints = {Capability(name): hint for name, hint in hints.items()}
    return backend


def test_every_field_of_resources_is_mapped_to_a_capability_or_to_none() -> None:
    assert set(RESOURCE_CAPABILITIES) == set(Resources.model_fields)
    assert set(DEFAULT_HINTS) == set(Capability)


ASKED = {
    Capability.FRACTIONAL_GPU: Resources(gpus=0.5),
    Capability.GPU_TYPE: Resources(gpus=1, gpu_type="a100"),
    Capability.GPU_MEMORY: Resources(gpus=1, gpu_memory="40GB"),
    Capability.TIME_LIMIT: Resources(time_limit="1h30m"),
    Capability.MULTI_NODE: Resources(nodes=2),
    Capability.LAUNCHER_TORCHRUN: Resources(launcher="torchrun"),
    Capability.LAUNCHER_RAY: Resources(launcher="ray"),
}


@pytest.mark.parametrize("capability", list(ASKED), ids=str)
def test_each_field_is_refused_without_its_capability_and_passes_with_it(
    tmp_path: Path, capability: Capability
) -> None:
    resources = ASKED[capability]
    assert set(needed_capabilities(resources)) == {capability}
    with pytest.raises(ResourceError, match=r"'plain' \(plain\) cannot honour") as refused:
        declared(tmp_path).check_resources(resources)
    assert refused.value.hint == DEFAULT_HINTS[capability]
    declared(tmp_path, capability).check_resources(resources)


def test_core_fields_need_no_capability(tmp_path: Path) -> None:
    declared(tmp_path).check_resources(Resources(cpus=4, memory="8GB", gpus=2))


def test_all_missing_capabilities_are_named_in_one_refusal_with_the_backend_hint(
    tmp_path: Path,
) -> None:
    backend = declared(tmp_path, Capability.GPU_TYPE, multi_node="Use the cluster profile.")
    with pytest.raises(ResourceError) as refused:
        backend.check_resources(
            Resources(gpus=1, gpu_type="a100", gpu_memory="40GB", nodes=2, time_limit=90)
        )
    assert refused.value.message == (
        "Backend 'plain' (plain) cannot honour gpu_memory=40.0GB or time_limit=1m30s or nodes=2."
    )
    hint = refused.value.hint or ""
    assert "Use the cluster profile." in hint  # the backend's own fix replaces the default
    assert DEFAULT_HINTS[Capability.MULTI_NODE] not in hint
    assert DEFAULT_HINTS[Capability.GPU_MEMORY] in hint


def test_following_logs_needs_log_follow(tmp_path: Path) -> None:
    handle = JobHandle(backend="plain", job_id="1")
    with pytest.raises(BackendError, match="cannot follow the logs"):
        declared(tmp_path).logs(handle, follow=True)
    assert list(declared(tmp_path).logs(handle)) == ["a line"]
    assert list(declared(tmp_path, Capability.LOG_FOLLOW).logs(handle, follow=True)) == ["a line"]


def test_require_refuses_a_missing_capability_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match=r"cannot run 2 model server replicas") as refused:
        declared(tmp_path).require(Capability.SERVICES, "run 2 model server replicas")
    assert refused.value.hint == DEFAULT_HINTS[Capability.SERVICES]
    declared(tmp_path, Capability.SERVICES).require(Capability.SERVICES, "serve")


def test_gpu_fields_without_gpus_are_refused_when_the_request_is_written() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="gpu_type is set but gpus is 0"):
        Resources(gpu_type="a100")
    with pytest.raises(ValidationError, match="gpu_memory is set but gpus is 0"):
        Resources(gpu_memory="10GB")
