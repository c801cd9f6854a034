"""Leasing this machine's GPUs to local steps: whole devices, or shares of one device.

A whole-GPU request (``gpus=1``, ``2``, …) takes devices nobody else uses. A fractional request
(``gpus=0.5``, optionally ``gpu_memory="10GB"``) is co-located with other fractional steps on
one device, best fit, so they pack onto as few devices as possible and whole devices stay free
for whole-GPU steps. A step sees only its devices through ``CUDA_VISIBLE_DEVICES``.

Shares are bookkeeping, not isolation: nothing stops a step from using more than its share of a
device (MPS or MIG would, and are outside this module).

Given a lease file (``gpu_leases.FileLeases``), every decision is made on the leases of every
mlyard process of the machine, so ``mlyard run``, ``mlyard serve`` and ``mlyard consume`` running
at once never hand out the same GPU; without one, leases are this allocator's alone.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlyard.backends.local.gpu_leases import (
    FileLeases,
    GpuLease,
    HeldLease,
    LeaseBook,
    LeaseHolder,
    MemoryLeases,
    drop_exited,
)
from mlyard.errors import ResourceError
from mlyard.extras import require_extra
from mlyard.models.resources import Resources, format_size
from mlyard.platform.gpu_inventory import GpuDevice

__all__ = ["GpuAllocator", "GpuLease", "LeaseHolder"]

logger = logging.getLogger(__name__)

# Shares are floats (three steps of 0.1 …); tolerate rounding when adding them up.
_SHARE_TOLERANCE = 1e-9
_GIB = 1024**3


@dataclass
class _DeviceUse:
    """What is leased on one device right now."""

    share: float = 0.0
    memory_bytes: int = 0
    lease_ids: set[str] = field(default_factory=set)

    @property
    def is_free(self) -> bool:
        return not self.lease_ids


class GpuAllocator:
    """Leases the GPUs of one machine to steps; safe to call from several threads and, with a
    lease file, from several processes."""

    def __init__(
        self,
        devices: Sequence[GpuDevice] | Callable[[], Sequence[GpuDevice]],
        *,
        lease_file: Path | None = None,
    ) -> None:
        """``devices``, or a function that lists them: called the first time a GPU request
        needs the inventory, so CPU-only runs never load NVML. ``lease_file`` shares the
        leases with every process using the same file (see ``gpu_leases.lease_file_of``)."""
        self._discover = devices if callable(devices) else (lambda: devices)
        self._devices: tuple[GpuDevice, ...] | None = None
        self._by_index: dict[int, GpuDevice] = {}
        self._book: LeaseBook = FileLeases(lease_file) if lease_file else MemoryLeases()
        #: Leases this allocator handed out or restored (CPU-only ones never reach the book).
        self._own: dict[str, GpuLease] = {}
        self._lock = threading.RLock()

    @property
    def devices(self) -> tuple[GpuDevice, ...]:
        with self._lock:
            if self._devices is None:
                self._devices = tuple(self._discover())
                self._by_index = {device.index: device for device in self._devices}
            return self._devices

    def describe(self) -> str:
        """What the machine has, for messages: ``2 x NVIDIA A10 (24 GB)``."""
        if not self.devices:
            return "this machine has no NVIDIA GPU"
        kinds = Counter((device.name, device.memory_total_bytes) for device in self.devices)
        listed = ", ".join(
            f"{count} x {name} ({_device_memory(memory)})"
            for (name, memory), count in kinds.items()
        )
        return f"this machine has {listed}"

    def check_satisfiable(
        self, resources: Resources, *, requester: str = "The step", fix: str | None = None
    ) -> None:
        """Raise ``ResourceError`` when this machine can never satisfy ``resources``.

        Does not look at current leases: a request that only has to wait passes. ``requester``
        and ``fix`` word the error for who asked (a step, a model server replica, …).
        """
        if resources.gpus == 0 and resources.gpu_memory is None:
            return
        problem = self._why_never_satisfiable(resources)
        if problem is not None:
            # Without NVML the machine's GPUs cannot be seen: say what to install, not "none".
            require_extra(
                "gpu",
                needed_by=f"{requester} asks for {_describe_gpu_request(resources)}; "
                "finding this machine's GPUs",
            )
            raise ResourceError(
                f"{requester} asks for {_describe_gpu_request(resources)}, but "
                f"{self.describe()}{problem}.",
                hint=fix
                or (
                    "Lower the GPU request of the step, or run it on a backend that has such "
                    "GPUs, e.g. `--backend <your slurm or kubernetes profile>`."
                ),
            )

    def try_lease(self, lease_id: str, resources: Resources) -> GpuLease | None:
        """Lease devices for ``resources`` now, or ``None`` when they are busy.

        Idempotent: leasing the same ``lease_id`` again returns the lease it already holds.
        Never blocks beyond the lease file's lock; call ``check_satisfiable`` first to tell
        "busy" from "impossible". The lease is held by this process until released.
        """
        with self._lock:
            existing = self._own.get(lease_id)
            if existing is not None:
                return existing
            if resources.gpus == 0 and resources.gpu_memory is None:
                # No device, so nothing another process could collide with: no file access.
                self._own[lease_id] = GpuLease(lease_id, (), 0.0, None)
                return self._own[lease_id]
            self.devices  # noqa: B018 - read the inventory before taking the file's lock
            with self._book.open() as leases:
                held = leases.get(lease_id)
                if held is not None:  # taken by an earlier process for the same purpose
                    leases[lease_id] = held.held_also_by(LeaseHolder.current())
                    lease: GpuLease | None = held.lease
                else:
                    lease = self._place(lease_id, resources, leases)
                    if lease is None and drop_exited(leases):
                        lease = self._place(lease_id, resources, leases)
                    if lease is not None:
                        leases[lease_id] = HeldLease(lease, (LeaseHolder.current(),))
            if lease is not None:
                self._own[lease_id] = lease
            return lease

    def release(self, lease_id: str) -> None:
        """Give the devices of ``lease_id`` back; releasing an unknown lease does nothing (one
        another process took is dropped once its holders exit)."""
        with self._lock:
            lease = self._own.pop(lease_id, None)
            if lease is None or not lease.device_indices:
                return
            with self._book.open() as leases:
                leases.pop(lease_id, None)

    def restore(self, lease: GpuLease, holder: LeaseHolder | None = None) -> None:
        """Re-register a lease a running step still holds, after an orchestrator restart.

        The step is already running on those devices, so the lease is recorded even when it
        over-commits them; devices this machine no longer has are ignored with a warning.
        This process and ``holder`` (the step's process) hold it from now on.
        """
        with self._lock:
            if lease.lease_id in self._own:
                return
            self._own[lease.lease_id] = lease
            if not lease.device_indices:
                return
            known = {device.index for device in self.devices}
            missing = [index for index in lease.device_indices if index not in known]
            if missing:
                logger.warning(
                    "lease %s names GPU indices %s that this machine does not have",
                    lease.lease_id,
                    missing,
                )
            with self._book.open() as leases:
                held = leases.get(lease.lease_id) or HeldLease(lease, ())
                held = held.held_also_by(LeaseHolder.current())
                leases[lease.lease_id] = held if holder is None else held.held_also_by(holder)

    def hold_for(self, lease_id: str, holder: LeaseHolder) -> None:
        """Keep ``lease_id`` while ``holder`` runs too (the step process using the devices), so
        the lease outlives this process when it is killed and the step goes on."""
        with self._lock:
            lease = self._own.get(lease_id)
            if lease is None or not lease.device_indices:
                return
            with self._book.open() as leases:
                held = leases.get(lease_id)
                if held is not None:
                    leases[lease_id] = held.held_also_by(holder)

    def other_holders(self) -> list[int]:
        """Pids of the live processes holding leases this allocator did not take (another
        ``mlyard run``, ``serve`` or ``consume``), for telling people why a GPU step waits."""
        with self._lock, self._book.open() as leases:
            drop_exited(leases)
            return sorted(
                {
                    holder.pid
                    for lease_id, held in leases.items()
                    if lease_id not in self._own
                    for holder in held.holders
                    if holder.is_alive()
                }
            )

    # -- internals (called with the lock held) --------------------------------------------

    def _place(
        self, lease_id: str, resources: Resources, leases: dict[str, HeldLease]
    ) -> GpuLease | None:
        use = self._use_of(leases.values())
        if resources.gpus >= 1:
            return self._lease_whole(lease_id, resources, use)
        return self._lease_share(lease_id, resources, use)

    def _use_of(self, leases: Iterable[HeldLease]) -> dict[int, _DeviceUse]:
        """What is leased on each device of this machine."""
        use = {device.index: _DeviceUse() for device in self.devices}
        for held in leases:
            for index in held.lease.device_indices:
                if index in use:
                    use[index].lease_ids.add(held.lease.lease_id)
                    use[index].share += held.lease.share
                    use[index].memory_bytes += self._reserved_memory(held.lease, index)
        return use

    def _reserved_memory(self, lease: GpuLease, index: int) -> int:
        """Memory a lease holds on a device: what it asked, else its share of the device."""
        if lease.memory_bytes is not None:
            return lease.memory_bytes
        device = self._by_index.get(index)
        return 0 if device is None else int(lease.share * device.memory_total_bytes)

    def _candidates(self, resources: Resources) -> list[GpuDevice]:
        """Devices of the wanted type with enough memory, whether busy or not."""
        return [
            device
            for device in self.devices
            if _matches_type(device, resources.gpu_type)
            and (resources.gpu_memory is None or device.memory_total_bytes >= resources.gpu_memory)
        ]

    def _lease_whole(
        self, lease_id: str, resources: Resources, use: dict[int, _DeviceUse]
    ) -> GpuLease | None:
        free = [device for device in self._candidates(resources) if use[device.index].is_free]
        if len(free) < resources.whole_gpus:
            return None
        # Smallest fitting devices first, so larger ones stay free for requests that need them.
        free.sort(key=lambda device: (device.memory_total_bytes, device.index))
        chosen = sorted(device.index for device in free[: resources.whole_gpus])
        return GpuLease(lease_id, tuple(chosen), 1.0, resources.gpu_memory)

    def _lease_share(
        self, lease_id: str, resources: Resources, use: dict[int, _DeviceUse]
    ) -> GpuLease | None:
        best: tuple[float, int, float] | None = None  # (share left after, index, share)
        for device in self._candidates(resources):
            share = _share_on(device, resources)
            used = use[device.index]
            memory = (
                resources.gpu_memory
                if resources.gpu_memory is not None
                else int(share * device.memory_total_bytes)
            )
            share_left = 1.0 - used.share - share
            fits = (
                share_left >= -_SHARE_TOLERANCE
                and used.memory_bytes + memory <= device.memory_total_bytes
            )
            # Best fit: the device left fullest, so fractional steps pack onto few devices.
            if fits and (best is None or (share_left, device.index) < best[:2]):
                best = (share_left, device.index, share)
        if best is None:
            return None
        return GpuLease(lease_id, (best[1],), best[2], resources.gpu_memory)

    def _why_never_satisfiable(self, resources: Resources) -> str | None:
        """The reason a request can never fit (appended to the message), or ``None``."""
        if not self.devices:
            return ""
        typed = [device for device in self.devices if _matches_type(device, resources.gpu_type)]
        if not typed:
            return f"; none of them is a '{resources.gpu_type}'"
        if resources.gpu_memory is not None:
            largest = max(device.memory_total_bytes for device in typed)
            if resources.gpu_memory > largest:
                return (
                    f"; {format_size(resources.gpu_memory)} of GPU memory is more than "
                    f"the largest device holds ({format_size(largest)})"
                )
        fitting = self._candidates(resources)
        if resources.gpus >= 1 and len(fitting) < resources.whole_gpus:
            return "" if len(fitting) == len(self.devices) else f"; only {len(fitting)} match"
        return None


def _matches_type(device: GpuDevice, gpu_type: str | None) -> bool:
    """``gpu_type`` is a case-insensitive part of the name: 'a100' matches 'NVIDIA A100-SXM4'."""
    return gpu_type is None or gpu_type.strip().lower() in device.name.lower()


def _share_on(device: GpuDevice, resources: Resources) -> float:
    """The fraction of ``device`` a fractional request takes; sized by memory when gpus is 0."""
    if resources.gpus > 0:
        return resources.gpus
    assert resources.gpu_memory is not None
    return min(1.0, resources.gpu_memory / device.memory_total_bytes)


def _device_memory(num_bytes: int) -> str:
    # Vendors name GPU memory in binary units but write "GB" (an A100 80GB holds 80 GiB).
    return f"{num_bytes / _GIB:.0f} GB"


def _describe_gpu_request(resources: Resources) -> str:
    if resources.gpus == 0:
        parts = ["a GPU share"]
    else:
        parts = [f"{resources.gpus:g} GPU" + ("s" if resources.gpus > 1 else "")]
    if resources.gpu_type:
        parts.append(f"of type '{resources.gpu_type}'")
    if resources.gpu_memory is not None:
        parts.append(f"with {format_size(resources.gpu_memory)} of GPU memory each")
    return " ".join(parts)
