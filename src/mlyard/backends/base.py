"""The backend contract: where steps execute.

Four operations, each wrapped here (template method) with timing and logging so that backends
never touch metrics or MLflow themselves. A backend implements the ``_``-prefixed methods.
Optional features are declared in ``capabilities`` and checked before dispatch, never signalled
by ``NotImplementedError``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from mlyard.errors import ResourceError
from mlyard.models.backends import JobHandle, JobStatus
from mlyard.models.resources import Resources
from mlyard.models.tasks import TaskSpec
from mlyard.settings import BackendProfile, Settings

if TYPE_CHECKING:
    from mlyard.artifacts.store import ArtifactStore

logger = logging.getLogger(__name__)


class Capability(StrEnum):
    FRACTIONAL_GPU = "fractional_gpu"
    MULTI_NODE = "multi_node"
    GPU_TYPE = "gpu_type"
    SERVICES = "services"
    LOG_FOLLOW = "log_follow"


@dataclass(frozen=True)
class SubmittedTask:
    """A task to submit plus where its documents are."""

    spec: TaskSpec
    task_uri: str = field(metadata={"doc": "URI of task.json in the artifact store."})


@dataclass(frozen=True)
class Capacity:
    """What a backend can run at once; ``None`` means the backend queues by itself."""

    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int | None = None


class Backend(ABC):
    """Base class of every backend. Subclasses implement ``_submit``, ``_status``, ``_cancel``,
    ``_logs`` and declare ``capabilities``."""

    #: Features this backend supports; anything else is refused before submission.
    capabilities: frozenset[Capability] = frozenset()
    #: Seconds between status queries: the first, and the most while nothing changes. The
    #: orchestrator starts at the first after each change and backs off to the second.
    poll_interval: tuple[float, float] = (0.01, 0.25)

    def __init__(
        self, name: str, profile: BackendProfile, settings: Settings, store: ArtifactStore
    ) -> None:
        self.name = name
        self.profile = profile
        self.settings = settings
        self.store = store

    # --- the contract -------------------------------------------------------------------

    def submit(self, task: SubmittedTask) -> JobHandle:
        """Start ``task`` and return its handle at once; never waits for the job to run.

        Idempotent per ``task.spec.attempt_id``: submitting an attempt that was already
        submitted returns the existing job's handle and starts nothing.
        Raises ``BackendError`` when the backend refused the job (with its own message).
        """
        started = time.perf_counter()
        handle = self._submit(task)
        logger.debug(
            "submitted %s/%s attempt %s as %s in %.3fs",
            task.spec.run_id,
            task.spec.step_name,
            task.spec.attempt,
            handle.job_id,
            time.perf_counter() - started,
        )
        return handle

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        """The states of many jobs, by job id, in as few backend calls as possible.

        Does not block beyond one round trip to the backend. A job the backend no longer knows
        is reported ``LOST``. Raises ``BackendError`` when the backend cannot be reached.
        """
        if not handles:
            return {}
        return self._status(handles)

    def cancel(self, handle: JobHandle) -> None:
        """Ask the backend to stop the job; returns without waiting for it to end.

        Idempotent: cancelling a finished or unknown job does nothing.
        """
        self._cancel(handle)

    def logs(self, handle: JobHandle, *, follow: bool = False) -> Iterator[str]:
        """Lines the job wrote to stdout/stderr; with ``follow`` keeps yielding until it ends."""
        return self._logs(handle, follow=follow)

    def check_resources(self, resources: Resources) -> None:
        """Refuse, before anything is submitted, a request this backend can never satisfy.

        Raises ``ResourceError`` saying what was asked, what is available and what to change.
        """
        if resources.is_fractional_gpu and Capability.FRACTIONAL_GPU not in self.capabilities:
            raise ResourceError(
                f"Backend {self.name!r} cannot share a GPU (gpus={resources.gpus:g}).",
                hint="Ask for a whole GPU (gpus=1), or use a backend whose profile enables "
                "GPU sharing.",
            )
        if resources.nodes > 1 and Capability.MULTI_NODE not in self.capabilities:
            raise ResourceError(
                f"Backend {self.name!r} runs steps on one node only (nodes={resources.nodes}).",
                hint="Use nodes=1 here, or a multi-node backend such as slurm.",
            )
        self._check_resources(resources)

    def wait_for_change(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when a job may have changed state.

        The default just sleeps; a backend that learns of job ends (e.g. a child exiting)
        returns at once, so the orchestrator reacts without polling faster.
        """
        time.sleep(timeout)

    def capacity(self) -> Capacity:
        """How much the orchestrator may run at once on this backend."""
        return Capacity()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the backend may not be used afterwards."""

    @classmethod  # noqa: B027 - optional hook
    def warm_up(cls, profile: BackendProfile, settings: Settings) -> None:
        """Optional hook, called as early as a run knows its backend: start what takes a
        while (a process pool, a connection) so it overlaps the run's preparation. Must not
        fail; a real error is reported when the backend itself is created."""

    # --- for subclasses -----------------------------------------------------------------

    @abstractmethod
    def _submit(self, task: SubmittedTask) -> JobHandle: ...

    @abstractmethod
    def _status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]: ...

    @abstractmethod
    def _cancel(self, handle: JobHandle) -> None: ...

    @abstractmethod
    def _logs(self, handle: JobHandle, *, follow: bool) -> Iterator[str]: ...

    def _check_resources(self, resources: Resources) -> None:  # noqa: B027 - optional hook
        """Backend-specific refusals; the default accepts."""
