"""Leasing this machine's GPUs to local steps: whole devices, or shares of one device.

A whole-GPU request (``gpus=1``, ``2``, …) takes devices nobody else uses. A fractional request
(``gpus=0.5``, optionally ``gpu_memory="10GB"``) is co-located with other fractional steps on
one device, best fit, so they pack onto as few devices as possible and whole devices stay free
for whole-GPU steps. A step sees only its devices through ``CUDA_VISIBLE_DEVICES``.

Shares are bookkeeping, not isolation: nothing stops a step from using more than its share of a
device (MPS or MIG would, and are outside this module).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mlyard.errors import ResourceError
from mlyard.models.resources import Resources, format_size
from mlyard.platform.gpu_inventory import GpuDevice

logger = logging.getLogger(__name__)

# Shares are floats (three steps of 0.1 …); tolerate rounding when adding them up.
_SHARE_TOLERANCE = 1e-9
_GIB = 1024**3


@dataclass(frozen=True)
class GpuLease:
    """The devices one step holds, and how much of each."""

    lease_id: str
    device_indices: tuple[int, ...]
    share: float  # fraction of each device held: 1.0 for whole GPUs
    memory_bytes: int | None  # GPU memory reserved per device when gpu_memory was asked

    @property
    def cuda_visible_devices(self) -> str:
        """The value of ``CUDA_VISIBLE_DEVICES`` for this lease: ``"0,1"``, or ``""``."""
        return ",".join(str(index) for index in self.device_indices)

    def environment(self) -> dict[str, str]:
        """Environment variables that confine the step to its devices."""
        environment = {"CUDA_VISIBLE_DEVICES": self.cuda_visible_devices}
        if self.device_indices:
            # Our indices are NVML's, which follow PCI bus order; CUDA numbers devices fastest
            # first unless told otherwise, so without this "1" could name another GPU.
            environment["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        if 0 < self.share < 1:
            environment["MLYARD_GPU_SHARE"] = f"{self.share:g}"
            # PYTORCH_CUDA_ALLOC_CONF is deliberately left alone: it holds no memory cap (the
            # cap is torch.cuda.set_per_process_memory_fraction, a call in the step's code), and
            # overwriting it would drop allocator settings the user chose. Steps and helpers
            # read MLYARD_GPU_SHARE to apply the fraction themselves.
        return environment


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
    """Leases the GPUs of one machine to steps; safe to call from several threads."""

    def __init__(self, devices: Sequence[GpuDevice] | Callable[[], Sequence[GpuDevice]]) -> None:
        """``devices``, or a function that lists them: called the first time a GPU request
        needs the inventory, so CPU-only runs never load NVML."""
        self._discover = devices if callable(devices) else (lambda: devices)
        self._devices: tuple[GpuDevice, ...] | None = None
        self._by_index: dict[int, GpuDevice] = {}
        self._use: dict[int, _DeviceUse] = {}
        self._leases: dict[str, GpuLease] = {}
        self._lock = threading.RLock()

    @property
    def devices(self) -> tuple[GpuDevice, ...]:
        with self._lock:
            if self._devices is None:
                self._devices = tuple(self._discover())
                self._by_index = {device.index: device for device in self._devices}
                self._use = {device.index: _DeviceUse() for device in self._devices}
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
        Never blocks; call ``check_satisfiable`` first to tell "busy" from "impossible".
        """
        with self._lock:
            existing = self._leases.get(lease_id)
            if existing is not None:
                return existing
            if resources.gpus == 0 and resources.gpu_memory is None:
                lease: GpuLease | None = GpuLease(lease_id, (), 0.0, None)
            elif resources.gpus >= 1:
                lease = self._lease_whole(lease_id, resources)
            else:
                lease = self._lease_share(lease_id, resources)
            if lease is not None:
                self._register(lease)
            return lease

    def release(self, lease_id: str) -> None:
        """Give the devices of ``lease_id`` back; releasing an unknown lease does nothing."""
        with self._lock:
            lease = self._leases.pop(lease_id, None)
            if lease is None:
                return
            for index in lease.device_indices:
                use = self._use.get(index)
                if use is None or lease_id not in use.lease_ids:
                    continue
                use.lease_ids.discard(lease_id)
                use.share = max(0.0, use.share - lease.share)
                use.memory_bytes = max(0, use.memory_bytes - self._reserved_memory(lease, index))
                if use.is_free:  # drop float residue so the device counts as whole again
                    use.share, use.memory_bytes = 0.0, 0

    def restore(self, lease: GpuLease) -> None:
        """Re-register a lease a running step still holds, after an orchestrator restart.

        The step is already running on those devices, so the lease is recorded even when it
        over-commits them; devices this machine no longer has are ignored with a warning.
        """
        with self._lock:
            if lease.lease_id in self._leases:
                return
            known = {device.index for device in self.devices} if lease.device_indices else set()
            missing = [index for index in lease.device_indices if index not in known]
            if missing:
                logger.warning(
                    "lease %s names GPU indices %s that this machine does not have",
                    lease.lease_id,
                    missing,
                )
            self._register(lease)

    # -- internals (called with the lock held) --------------------------------------------

    def _register(self, lease: GpuLease) -> None:
        self._leases[lease.lease_id] = lease
        for index in lease.device_indices:
            use = self._use.get(index)
            if use is None:
                continue
            use.lease_ids.add(lease.lease_id)
            use.share += lease.share
            use.memory_bytes += self._reserved_memory(lease, index)

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

    def _lease_whole(self, lease_id: str, resources: Resources) -> GpuLease | None:
        free = [device for device in self._candidates(resources) if self._use[device.index].is_free]
        if len(free) < resources.whole_gpus:
            return None
        # Smallest fitting devices first, so larger ones stay free for requests that need them.
        free.sort(key=lambda device: (device.memory_total_bytes, device.index))
        chosen = sorted(device.index for device in free[: resources.whole_gpus])
        return GpuLease(lease_id, tuple(chosen), 1.0, resources.gpu_memory)

    def _lease_share(self, lease_id: str, resources: Resources) -> GpuLease | None:
        best: tuple[float, int, float] | None = None  # (share left after, index, share)
        for device in self._candidates(resources):
            share = _share_on(device, resources)
            use = self._use[device.index]
            memory = (
                resources.gpu_memory
                if resources.gpu_memory is not None
                else int(share * device.memory_total_bytes)
            )
            share_left = 1.0 - use.share - share
            fits = (
                share_left >= -_SHARE_TOLERANCE
                and use.memory_bytes + memory <= device.memory_total_bytes
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
