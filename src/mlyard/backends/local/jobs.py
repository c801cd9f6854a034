"""A local job and the files a restarted orchestrator finds it by.

Each job has a JSON state file per phase (``<attempt_id>.<phase>.json``; the latest readable one
counts) and the pid file its step process writes first thing (``<attempt_id>.pid``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlyard.backends.local import fork_server
from mlyard.backends.local.gpu_allocator import GpuLease
from mlyard.backends.local.processes import StepProcess
from mlyard.models.backends import JobStatus
from mlyard.models.resources import Resources

logger = logging.getLogger(__name__)

#: The phases a job's state passes through, in order; each is a file of its own.
JOB_PHASES = ("queued", "starting", "running", "ended")


@dataclass
class LocalJob:
    job_id: str
    task_uri: str
    resources: Resources
    environment: dict[str, str]
    log_path: Path
    process: StepProcess | None = None
    #: The fork server asked to start the job, until its pid is known (then ``process``).
    forked_by: fork_server.ForkServer | None = None
    lease: GpuLease | None = None
    cancelled: bool = False

    def state_document(self, phase: str, status: JobStatus | None = None) -> dict[str, Any]:
        """What a restarted orchestrator needs to know about the job in ``phase``."""
        document: dict[str, Any] = {
            "phase": phase,
            "task_uri": self.task_uri,
            "resources": self.resources.model_dump(mode="json"),
            "environment": self.environment,
            "log_path": str(self.log_path),
        }
        if self.process is not None:
            document["pid"] = self.process.pid
            document["create_time"] = self.process.create_time
        if self.lease is not None:
            document["lease"] = {
                "device_indices": list(self.lease.device_indices),
                "share": self.lease.share,
                "memory_bytes": self.lease.memory_bytes,
            }
        if status is not None:
            document["status"] = status.model_dump(mode="json")
        return document


class JobFiles:
    """The state and pid files of the local backend's jobs, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def pid_path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.pid"

    def _state_path(self, job_id: str, phase: str) -> Path:
        return self.directory / f"{job_id}.{phase}.json"

    def write(self, job: LocalJob, phase: str, status: JobStatus | None = None) -> None:
        # One file per phase, each renamed into place under a new name: renaming over an
        # existing file makes ext4 flush the new one first (auto_da_alloc), ~0.15 ms a write.
        path = self._state_path(job.job_id, phase)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(job.state_document(phase, status)))
        temporary.replace(path)

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest state document, or None when this backend never had the job."""
        for phase in reversed(JOB_PHASES):
            try:
                document: dict[str, Any] = json.loads(self._state_path(job_id, phase).read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError):  # cut short by a crash: an earlier phase still holds
                logger.warning("unreadable %s state of local job %s", phase, job_id)
                continue
            return document
        return None
