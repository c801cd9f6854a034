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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from mlyard.errors import BackendError, ResourceError
from mlyard.models.backends import JobHandle, JobStatus
from mlyard.models.resources import Resources, format_duration, format_size
from mlyard.models.tasks import TaskSpec
from mlyard.settings import BackendProfile, Settings

if TYPE_CHECKING:
    from mlyard.artifacts.store import ArtifactStore

logger = logging.getLogger(__name__)


class Capability(StrEnum):
    """An optional feature a backend declares in ``capabilities``; what it promises:

    - ``FRACTIONAL_GPU``: ``gpus`` below 1 runs on a share of one device, co-located with others.
    - ``MULTI_NODE``: ``nodes`` above 1 gets that many nodes, started together.
    - ``GPU_TYPE``: ``gpu_type`` gets that GPU model (a short name such as ``a100`` matches
      the full product name), or waits for one; never another model.
    - ``GPU_MEMORY``: ``gpu_memory`` gets devices holding at least that much memory each (on a
      shared device, that much is reserved for the step).
    - ``TIME_LIMIT``: an attempt running past ``time_limit`` is ended and fails, saying so.
    - ``LAUNCHER_TORCHRUN``: ``launcher="torchrun"`` runs the step under ``torchrun``, one rank
      per GPU on every node (rank 0 writes the result).
    - ``LAUNCHER_RAY``: ``launcher="ray"`` runs the step as the driver of a Ray cluster over
      its nodes, which the step's ``ray.init()`` attaches to (on one machine, ``ray.init()``
      starting Ray there is that cluster).
    - ``SERVICES``: long-running model servers and event consumers (``mlyard serve``,
      ``mlyard consume``) run there; callers check it with ``Backend.require``.
    - ``LOG_FOLLOW``: ``logs(handle, follow=True)`` keeps yielding lines until the job ends.

    ``cpus``, ``memory`` and whole ``gpus`` need no capability: every backend honours them
    (``_check_resources`` refuses what it can never hold). See ``RESOURCE_CAPABILITIES``.
    """

    FRACTIONAL_GPU = "fractional_gpu"
    MULTI_NODE = "multi_node"
    GPU_TYPE = "gpu_type"
    GPU_MEMORY = "gpu_memory"
    TIME_LIMIT = "time_limit"
    LAUNCHER_TORCHRUN = "launcher_torchrun"
    LAUNCHER_RAY = "launcher_ray"
    SERVICES = "services"
    LOG_FOLLOW = "log_follow"


#: Every field of ``Resources`` and the capability it needs (``None``: every backend honours
#: it). A test keeps this in step with ``Resources``, so a new field cannot be dropped silently.
RESOURCE_CAPABILITIES: dict[str, Capability | None] = {
    "cpus": None,
    "memory": None,
    "gpus": Capability.FRACTIONAL_GPU,  # whole GPUs need none; a fraction needs sharing
    "gpu_type": Capability.GPU_TYPE,
    "gpu_memory": Capability.GPU_MEMORY,
    "time_limit": Capability.TIME_LIMIT,
    "nodes": Capability.MULTI_NODE,
    "launcher": None,  # one capability per launcher, see needed_capabilities
}

#: What to change when a backend lacks a capability; a backend overrides entries with its own
#: fix (``capability_hints``), e.g. the profile setting that enables it.
DEFAULT_HINTS: dict[Capability, str] = {
    Capability.FRACTIONAL_GPU: "Ask for a whole GPU (gpus=1), or use a backend whose profile "
    "enables GPU sharing.",
    Capability.MULTI_NODE: "Use nodes=1 here, or a multi-node backend such as slurm.",
    Capability.GPU_TYPE: "Drop gpu_type, or use a backend that can pick the GPU model.",
    Capability.GPU_MEMORY: "Drop gpu_memory, or use a backend that can pick GPUs by memory.",
    Capability.TIME_LIMIT: "Drop Resources(time_limit=...) and use @step(timeout=...), which "
    "the orchestrator enforces on every backend.",
    Capability.LAUNCHER_TORCHRUN: "Drop launcher='torchrun', or use a backend with torchrun.",
    Capability.LAUNCHER_RAY: "Drop launcher='ray', or use a backend that boots Ray clusters.",
    Capability.SERVICES: "Run it on a backend that runs services (local, kubernetes).",
    Capability.LOG_FOLLOW: "Read the logs without --follow, and again later.",
}


def needed_capabilities(resources: Resources) -> dict[Capability, str]:
    """The capabilities ``resources`` needs, each with what was asked (``gpus=0.5``)."""
    needed: dict[Capability, str] = {}
    if resources.is_fractional_gpu:
        needed[Capability.FRACTIONAL_GPU] = f"gpus={resources.gpus:g} (a share of one GPU)"
    if resources.gpu_type is not None:
        needed[Capability.GPU_TYPE] = f"gpu_type={resources.gpu_type!r}"
    if resources.gpu_memory is not None:
        needed[Capability.GPU_MEMORY] = f"gpu_memory={format_size(resources.gpu_memory)}"
    if resources.time_limit is not None:
        needed[Capability.TIME_LIMIT] = f"time_limit={format_duration(resources.time_limit)}"
    if resources.nodes > 1:
        needed[Capability.MULTI_NODE] = f"nodes={resources.nodes}"
    if resources.launcher == "torchrun":
        needed[Capability.LAUNCHER_TORCHRUN] = "launcher='torchrun'"
    elif resources.launcher == "ray":
        needed[Capability.LAUNCHER_RAY] = "launcher='ray'"
    return needed


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
    #: This backend's own fix for a capability it lacks (a profile setting, another backend);
    #: capabilities not named here get ``DEFAULT_HINTS``.
    capability_hints: Mapping[Capability, str] = {}
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
        """Lines the job wrote to stdout/stderr; with ``follow`` keeps yielding until it ends.

        Raises ``BackendError`` at once when ``follow`` is asked of a backend without
        ``LOG_FOLLOW``.
        """
        if follow and Capability.LOG_FOLLOW not in self.capabilities:
            raise BackendError(
                f"Backend {self.name!r} cannot follow the logs of a running job.",
                hint=self.hint_for(Capability.LOG_FOLLOW),
            )
        return self._logs(handle, follow=follow)

    def check_resources(self, resources: Resources) -> None:
        """Refuse, before anything is submitted, a request this backend can never satisfy.

        Every field of ``resources`` is either honoured or refused here, never dropped: fields
        needing a capability this backend lacks are refused together, each with this backend's
        fix, then ``_check_resources`` refuses what the backend itself can never hold.
        Raises ``ResourceError`` saying what was asked, what is available and what to change.
        """
        missing = {
            capability: asked
            for capability, asked in needed_capabilities(resources).items()
            if capability not in self.capabilities
        }
        if missing:
            hints = dict.fromkeys(self.hint_for(capability) for capability in missing)
            raise ResourceError(
                f"Backend {self.name!r} ({self.profile.type}) cannot honour "
                f"{' or '.join(missing.values())}.",
                hint=" ".join(hints),
            )
        self._check_resources(resources)

    def require(self, capability: Capability, what: str) -> None:
        """Refuse ``what`` (e.g. "serve a model") when this backend lacks ``capability``.

        For features that are not a ``Resources`` field, such as ``SERVICES``: the caller
        checks before it starts anything. Raises ``ResourceError`` with this backend's fix.
        """
        if capability not in self.capabilities:
            raise ResourceError(
                f"Backend {self.name!r} ({self.profile.type}) cannot {what}.",
                hint=self.hint_for(capability),
            )

    def hint_for(self, capability: Capability) -> str:
        """What to change when this backend lacks ``capability``: its own fix, else the default."""
        return self.capability_hints.get(capability) or DEFAULT_HINTS[capability]

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
