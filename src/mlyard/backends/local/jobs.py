"""A local job and the journal a restarted orchestrator finds it by.

Each job has one append-only journal, ``<attempt_id>.jsonl``: the orchestrator appends a JSON
line per phase the job enters, and the step process appends ``{"pid": N}`` first thing. The job's
state is its lines merged in order; a line cut short by a crash is skipped, so the phase before
it holds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlyard.backends.local import fork_server
from mlyard.backends.local.gpu_allocator import GpuLease
from mlyard.backends.local.processes import StepProcess, find_process, is_alive
from mlyard.models.backends import JobStatus
from mlyard.models.resources import Resources
from mlyard.runtime.announce import append_to_journal

logger = logging.getLogger(__name__)

#: The phases a job's state passes through, in order.
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
    #: When the step's process started (epoch seconds), for Resources.time_limit.
    started_at: float | None = None
    #: Stopped by this backend for running past Resources.time_limit.
    timed_out: bool = False

    @classmethod
    def from_document(cls, job_id: str, document: dict[str, Any]) -> LocalJob:
        """The job as its journal describes it (process and lease not yet looked at)."""
        return cls(
            job_id=job_id,
            task_uri=document["task_uri"],
            resources=Resources.model_validate(document["resources"]),
            environment=document.get("environment", {}),
            log_path=Path(document["log_path"]),
        )

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
            document["started"] = self.process.started
        if self.lease is not None:
            document["lease"] = {
                "device_indices": list(self.lease.device_indices),
                "share": self.lease.share,
                "memory_bytes": self.lease.memory_bytes,
            }
        if status is not None:
            document["status"] = status.model_dump(mode="json")
        return document


def running_process(document: dict[str, Any]) -> StepProcess | None:
    """The journal's step process if it still runs (``None``: it ended while nobody watched)."""
    pid = document.get("pid")
    started = document.get("started", document.get("create_time"))  # the name until 2026-12
    if pid is not None and started is not None:
        return StepProcess(pid=pid, started=started) if is_alive(pid, started) else None
    if pid is not None:
        return find_process(pid)  # the step wrote its pid; the orchestrator had not yet
    return None


def lease_of(job_id: str, document: dict[str, Any]) -> GpuLease | None:
    """The GPU lease the journal records for the job, if any."""
    lease = document.get("lease")
    if lease is None:
        return None
    return GpuLease(
        lease_id=job_id,
        device_indices=tuple(lease["device_indices"]),
        share=lease["share"],
        memory_bytes=lease["memory_bytes"],
    )


class JobFiles:
    """The journals of the local backend's jobs, in one directory.

    Appending to one file per job, rather than writing a file per phase, creates one inode per
    job instead of four: creating files is the dearest part of a trivial step's bookkeeping
    (on ext4 without a journal, each creation scans past recently deleted inodes).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def journal_path(self, job_id: str) -> Path:
        """Where the job's lines go; the step process is told it to append its pid."""
        return self.directory / f"{job_id}.jsonl"

    def write(self, job: LocalJob, phase: str, status: JobStatus | None = None) -> None:
        line = json.dumps(job.state_document(phase, status)) + "\n"
        append_to_journal(self.journal_path(job.job_id), line.encode())

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest state (its lines merged), or None when this backend never had it."""
        try:
            lines = self.journal_path(job_id).read_bytes().splitlines()
        except FileNotFoundError:
            return None
        state: dict[str, Any] = {}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # cut short by a crash: the lines before it still hold
                logger.warning("skipping an unreadable line in the journal of local job %s", job_id)
                continue
            if isinstance(entry, dict):
                state.update(entry)
        return state if "phase" in state else None
