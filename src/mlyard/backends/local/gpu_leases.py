"""The GPU leases of one machine, shared by every mlyard process on it.

``mlyard run``, ``mlyard serve`` and ``mlyard consume`` each lease GPUs; unless they see each
other's leases, two of them hand out the same device or overfill a shared one. The leases live in
one JSON file (``$MLYARD_HOME/local/gpu-leases.json``), read and rewritten under an exclusive
``flock`` on a lock file beside it, so every decision is made on the machine's current leases.
A lease names the processes holding it, by pid and start time as the jobs journal does (pids get
reused): when a request does not fit, the leases whose holders have all exited are dropped and
it is tried again, so a process that was killed never keeps a GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlyard.backends.local.processes import is_alive, started_since_boot

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def lease_file_of(home: Path) -> Path:
    """Where the machine's GPU leases are kept for the mlyard home ``home``."""
    return home / "local" / "gpu-leases.json"


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


@dataclass(frozen=True)
class LeaseHolder:
    """A process holding a lease: its pid and start time, so a reused pid is not mistaken."""

    pid: int
    #: ``processes.started_since_boot(pid)``
    started: float

    @classmethod
    def current(cls) -> LeaseHolder:
        """This process."""
        pid = os.getpid()
        known = _CURRENT.get(pid)
        if known is None:  # keyed by pid: a forked child is a holder of its own
            known = _CURRENT[pid] = cls(pid, started_since_boot(pid))
        return known

    def is_alive(self) -> bool:
        return is_alive(self.pid, self.started)


_CURRENT: dict[int, LeaseHolder] = {}


@dataclass(frozen=True)
class HeldLease:
    """A lease and the processes holding it; it lasts while any of them runs."""

    lease: GpuLease
    holders: tuple[LeaseHolder, ...]

    def held_also_by(self, holder: LeaseHolder) -> HeldLease:
        if holder in self.holders:
            return self
        return HeldLease(self.lease, (*self.holders, holder))


def drop_exited(leases: dict[str, HeldLease]) -> bool:
    """Remove the leases whose holders have all exited; True when there were any.

    Called only when a request does not fit, so leasing on a machine with room asks the
    kernel about no process.
    """
    exited = [
        lease_id
        for lease_id, held in leases.items()
        if not any(holder.is_alive() for holder in held.holders)
    ]
    for lease_id in exited:
        del leases[lease_id]
        logger.info("reclaimed GPU lease %s: every process holding it has exited", lease_id)
    return bool(exited)


class LeaseBook(Protocol):
    """Where an allocator's leases are kept: this process's memory, or the machine's file."""

    def open(self) -> contextlib.AbstractContextManager[dict[str, HeldLease]]:
        """The current leases by id, for one decision; changes to the dict are kept."""
        ...


class MemoryLeases:
    """Leases seen by this process only (one allocator, e.g. in tests)."""

    def __init__(self) -> None:
        self._leases: dict[str, HeldLease] = {}

    @contextlib.contextmanager
    def open(self) -> Iterator[dict[str, HeldLease]]:
        yield self._leases


class FileLeases:
    """Leases shared by every process of this machine through one file under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    @contextlib.contextmanager
    def open(self) -> Iterator[dict[str, HeldLease]]:
        """Lock and read the leases; write back what changed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
            stored = self._read()
            leases = dict(stored)
            yield leases
            if leases != stored:
                self._write(leases)

    def _read(self) -> dict[str, HeldLease]:
        try:
            document = json.loads(self.path.read_bytes())
            return {
                lease_id: _held_from_json(lease_id, entry)
                for lease_id, entry in document["leases"].items()
            }
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Written whole by os.replace, so only a hand edit can break it; starting over
            # forgets leases rather than refusing every GPU request on the machine.
            logger.warning("ignoring the unreadable GPU lease file %s (%s)", self.path, exc)
            return {}

    def _write(self, leases: dict[str, HeldLease]) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "leases": {lease_id: _held_to_json(held) for lease_id, held in leases.items()},
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(document))  # no indent: the C encoder
        temporary.replace(self.path)  # readers see the old file or the new one, never half


def _held_to_json(held: HeldLease) -> dict[str, Any]:
    return {
        "devices": list(held.lease.device_indices),
        "share": held.lease.share,
        "memory_bytes": held.lease.memory_bytes,
        "holders": [{"pid": h.pid, "started": h.started} for h in held.holders],
    }


def _held_from_json(lease_id: str, entry: dict[str, Any]) -> HeldLease:
    lease = GpuLease(
        lease_id=lease_id,
        device_indices=tuple(int(index) for index in entry["devices"]),
        share=float(entry["share"]),
        memory_bytes=None if entry["memory_bytes"] is None else int(entry["memory_bytes"]),
    )
    holders = tuple(
        LeaseHolder(int(holder["pid"]), float(holder.get("started", holder.get("create_time", 0))))
        for holder in entry["holders"]
    )
    return HeldLease(lease, holders)
