"""The local backend: each step attempt is a ``python -m mlyard.runtime`` process on this machine.

Steps wait in the backend's queue until the machine has the CPUs, memory and GPUs they asked for;
GPUs are leased by the allocator and exposed through ``CUDA_VISIBLE_DEVICES``. Every job has
a journal (a line per phase, the first written before the process starts), so a restarted
orchestrator re-attaches to steps that kept running instead of starting them again.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psutil

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, Capability, Capacity, SubmittedTask
from mlyard.backends.local import fork_server
from mlyard.backends.local.capacity import check_machine_holds, pending_reason
from mlyard.backends.local.gpu_allocator import GpuAllocator
from mlyard.backends.local.gpu_leases import LeaseHolder, lease_file_of
from mlyard.backends.local.jobs import JobFiles, LocalJob, lease_of, running_process
from mlyard.backends.local.preloads import libraries_to_preload
from mlyard.backends.local.processes import (
    StepProcess,
    seconds_since_start,
    start_process,
    stop_process_group,
)
from mlyard.errors import ConfigError
from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.resources import Resources, format_duration, parse_size
from mlyard.platform.gpu_inventory import discover_gpus
from mlyard.runtime.announce import JOB_JOURNAL_VARIABLE
from mlyard.settings import BackendProfile, Settings


class LocalBackend(Backend):
    """Steps as processes on this machine, sharing its CPUs, memory and GPUs."""

    # memory is a reservation here (steps wait until it is free), not a cap on the process.
    capabilities = frozenset(
        {
            Capability.FRACTIONAL_GPU,
            Capability.GPU_TYPE,
            Capability.GPU_MEMORY,
            Capability.TIME_LIMIT,
            Capability.LAUNCHER_TORCHRUN,
            # One node: the step's own ray.init() starts Ray here, as a driver would attach.
            Capability.LAUNCHER_RAY,
            Capability.SERVICES,
            Capability.LOG_FOLLOW,
        }
    )
    capability_hints = {
        Capability.MULTI_NODE: "This machine is one node: use nodes=1, or a multi-node backend "
        "(a slurm or kubernetes profile, --backend NAME).",
    }

    def __init__(
        self, name: str, profile: BackendProfile, settings: Settings, store: ArtifactStore
    ) -> None:
        super().__init__(name, profile, settings, store)
        extra = profile.model_extra or {}
        unknown = set(extra) - {"cpus", "memory", "fork_server"}
        if unknown:
            raise ConfigError(
                f"Backend {name!r} (local) has unknown settings: {', '.join(sorted(unknown))}.",
                hint="A local profile knows: cpus, memory, fork_server, costs.",
            )
        self._use_fork_server = bool(extra.get("fork_server", True))
        self._fork_server: fork_server.ForkServer | None = None
        self.total_cpus = float(extra.get("cpus") or os.cpu_count() or 1)
        self.total_memory = parse_size(extra.get("memory")) or psutil.virtual_memory().total
        # NVML only once a step wants a GPU; leases shared with `mlyard serve` and `consume`.
        self.allocator = GpuAllocator(discover_gpus, lease_file=lease_file_of(settings.home))
        self.jobs = JobFiles(settings.home / "local" / "jobs")
        self.logs_dir = settings.home / "logs"
        #: Jobs waiting for capacity, by job id, in submission order (FIFO with backfill).
        self._queued: dict[str, LocalJob] = {}
        self._running: dict[str, LocalJob] = {}
        self._finished: dict[str, JobStatus] = {}

    @classmethod
    def warm_up(cls, profile: BackendProfile, settings: Settings) -> None:
        """Start the fork server while the run is being prepared (it imports for ~0.2 s)."""
        if (profile.model_extra or {}).get("fork_server", True):
            is_local = ArtifactStore.is_local_url(settings.artifacts_url)
            fork_server.prestart(_store_libraries(is_local))
        else:
            fork_server.discard_prestarted()

    # --- contract ------------------------------------------------------------------------

    def _submit(self, task: SubmittedTask) -> JobHandle:
        job_id = task.spec.attempt_id
        handle = JobHandle(backend=self.name, job_id=job_id)
        if self._known(job_id) or self.jobs.read(job_id) is not None:
            return handle  # idempotent: already queued, running or ended
        job = LocalJob(
            job_id=job_id,
            task_uri=task.task_uri,
            resources=task.spec.resources,
            environment=dict(task.spec.environment),
            log_path=self.logs_dir / f"{job_id}.log",
        )
        if self._use_fork_server and self._fork_server is None:
            # Once per run: the one warm_up started, or a new one now.
            self._fork_server = fork_server.take()
            self._fork_server.import_libraries(
                (
                    *_store_libraries(self.store.is_local),
                    *libraries_to_preload(self.store, task.spec.code),
                )
            )
        self._queued[job_id] = job
        self._start_queued()  # a job that starts now is recorded as "starting" before it does
        if job_id in self._queued:
            self.jobs.write(job, "queued")
        return handle

    def _status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        for handle in handles:
            if not self._known(handle.job_id):
                self._reattach(handle.job_id)
        self._reap()
        self._start_queued()
        statuses = {}
        for handle in handles:
            statuses[handle.job_id] = self._job_status(handle.job_id)
        return statuses

    def _cancel(self, handle: JobHandle) -> None:
        job_id = handle.job_id
        if not self._known(job_id):
            self._reattach(job_id)
        queued = self._queued.pop(job_id, None)
        if queued is not None:
            self._finish(queued, JobStatus(state=JobState.CANCELLED, reason="cancelled"))
        running = self._running.get(job_id)
        if running is not None and running.forked_by is not None:
            self._adopt_forked(running, fork_server.STARTUP_TIMEOUT_SECONDS)
        if running is not None and running.process is not None:
            running.cancelled = True
            stop_process_group(running.process)
            self._reap()

    def _logs(self, handle: JobHandle, *, follow: bool) -> Iterator[str]:
        path = self.logs_dir / f"{handle.job_id}.log"
        position = 0
        while True:
            if path.exists():
                with path.open("r", errors="replace") as log:
                    log.seek(position)
                    for line in log:
                        yield line.rstrip("\n")
                    position = log.tell()
            if not follow:
                return
            status = self._status([handle])[handle.job_id]
            if status.state.is_terminal:
                follow = False  # one last read picks up the final lines
                continue
            time.sleep(0.2)

    def _check_resources(self, resources: Resources) -> None:
        check_machine_holds(resources, self.total_cpus, self.total_memory)
        self.allocator.check_satisfiable(resources)

    def wait_for_change(self, timeout: float) -> None:
        server = self._fork_server
        if server is None or not server.alive:
            time.sleep(timeout)
            return
        if server.child_ended.wait(timeout):
            server.child_ended.clear()

    def capacity(self) -> Capacity:
        return Capacity(
            cpus=self.total_cpus, memory_bytes=self.total_memory, gpus=len(self.allocator_devices)
        )

    @property
    def allocator_devices(self) -> list[Any]:
        return list(getattr(self.allocator, "devices", []))

    def close(self) -> None:
        """Stop the fork server; running steps are left alone (they belong to the run)."""
        if self._fork_server is not None:
            self._fork_server.close()
            self._fork_server = None

    # --- scheduling ----------------------------------------------------------------------

    def _known(self, job_id: str) -> bool:
        return job_id in self._running or job_id in self._finished or job_id in self._queued

    def _used(self) -> tuple[float, int]:
        cpus = sum(job.resources.cpus for job in self._running.values())
        memory = sum(job.resources.memory or 0 for job in self._running.values())
        return cpus, memory

    def _start_queued(self) -> None:
        for job in list(self._queued.values()):
            cpus, memory = self._used()
            fits = cpus + job.resources.cpus <= self.total_cpus + 1e-9 and (
                memory + (job.resources.memory or 0) <= self.total_memory
            )
            if not fits and self._running:
                continue  # FIFO with backfill: smaller later steps may start first
            lease = self.allocator.try_lease(job.job_id, job.resources)
            if lease is None:
                continue
            job.lease = lease
            del self._queued[job.job_id]
            self._launch(job)

    def _launch(self, job: LocalJob) -> None:
        environment = dict(os.environ)
        environment.update(job.environment)
        assert job.lease is not None
        environment.update(job.lease.environment())
        environment[JOB_JOURNAL_VARIABLE] = str(self.jobs.journal_path(job.job_id))
        arguments = [job.task_uri]
        if self.store.endpoint_url:
            arguments += ["--endpoint-url", self.store.endpoint_url]
        self.jobs.write(job, "starting")
        job.started_at = time.time()
        server = self._fork_server
        if job.resources.launcher == "torchrun":
            # One machine: torchrun's standalone rendezvous, one rank per leased GPU; every
            # rank runs the runtime, rank 0 alone writes the result.
            environment.pop(JOB_JOURNAL_VARIABLE)  # the agent is the job, not any one rank
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={job.resources.ranks_per_node}",
                "-m",
                "mlyard.runtime",
                *arguments,
            ]
            job.process = start_process(command, environment=environment, log_path=job.log_path)
        elif server is not None and server.wait_ready():
            # Not waiting for the fork: the orchestrator goes on while the server forks, and
            # the pid is picked up at the next status poll (the child appends its pid to the
            # job's journal first thing, for a restarted orchestrator).
            server.start(
                job.job_id, job.task_uri, self.store.endpoint_url, environment, job.log_path
            )
            job.forked_by = server
        else:
            command = [sys.executable, "-m", "mlyard.runtime", *arguments]
            job.process = start_process(command, environment=environment, log_path=job.log_path)
        self._running[job.job_id] = job
        if job.process is not None:
            self._hold_lease(job)
            self.jobs.write(job, "running")

    def _adopt_forked(self, job: LocalJob, timeout: float = 0.0) -> bool:
        """Give a job the fork server started its process, once the server named the pid;
        False while it has not (a job whose server ended first is finished as failed)."""
        server = job.forked_by
        assert server is not None
        pid = server.pid_of(job.job_id, timeout)
        if pid is None:
            if not server.alive:
                del self._running[job.job_id]
                failed = JobStatus(
                    state=JobState.FAILED,
                    reason="the local fork server ended before starting the step",
                    infrastructure_failure=True,
                )
                self._finish(job, failed)
            return False
        job.process = StepProcess(pid=pid, started=server.started(pid), fork_server=server)
        job.forked_by = None
        self._hold_lease(job)
        self.jobs.write(job, "running")
        return True

    def _reap(self) -> None:
        for job in list(self._running.values()):
            if job.process is None and not self._adopt_forked(job):
                continue  # forked, but the server has not named the pid yet
            assert job.process is not None
            code = job.process.exit_code()
            if code is None and self._past_time_limit(job):
                job.timed_out = True
                stop_process_group(job.process)
                code = job.process.exit_code()
            if code is None:
                continue
            if job.cancelled:
                status = JobStatus(state=JobState.CANCELLED, reason="cancelled")
            elif job.timed_out:
                assert job.resources.time_limit is not None
                status = JobStatus(
                    state=JobState.FAILED,
                    exit_code=code,
                    reason="TIMEOUT: the step exceeded its time limit of "
                    f"{format_duration(job.resources.time_limit)}; raise "
                    "Resources(time_limit=...)",
                )
            elif code == 0:
                status = JobStatus(state=JobState.SUCCEEDED, exit_code=0)
            elif code == -1 and job.process.adopted:
                # Adopted after a restart: the result document says how it ended.
                status = JobStatus(state=JobState.SUCCEEDED, reason="ended while detached")
            elif code < 0:
                status = JobStatus(
                    state=JobState.FAILED,
                    exit_code=code,
                    reason=f"killed by signal {-code}"
                    + (" (out of memory?)" if -code == 9 else ""),
                )
            else:
                status = JobStatus(state=JobState.FAILED, exit_code=code, reason=f"exit {code}")
            del self._running[job.job_id]
            self._finish(job, status)

    def _hold_lease(self, job: LocalJob) -> None:
        """The step's process holds its GPU lease too, so the lease outlives a killed
        orchestrator for as long as the step runs on the devices."""
        if job.lease is not None and job.lease.device_indices and job.process is not None:
            self.allocator.hold_for(job.job_id, LeaseHolder(job.process.pid, job.process.started))

    def _past_time_limit(self, job: LocalJob) -> bool:
        limit = job.resources.time_limit
        return (
            limit is not None
            and job.started_at is not None
            and (time.time() - job.started_at > limit)
        )

    def _finish(self, job: LocalJob, status: JobStatus) -> None:
        self.allocator.release(job.job_id)
        self._finished[job.job_id] = status
        self.jobs.write(job, "ended", status=status)

    def _job_status(self, job_id: str) -> JobStatus:
        if job_id in self._finished:
            return self._finished[job_id]
        running = self._running.get(job_id)
        if running is not None:
            # RUNNING once the pid is recorded: from then on a restarted orchestrator finds it.
            started = running.process is not None
            return JobStatus(state=JobState.RUNNING if started else JobState.PENDING)
        queued = self._queued.get(job_id)
        if queued is not None:
            return JobStatus(state=JobState.PENDING, reason=self._pending_reason(queued))
        return JobStatus(state=JobState.LOST, reason="the local backend does not know this job")

    def _pending_reason(self, job: LocalJob) -> str:
        others = self.allocator.other_holders() if job.resources.gpus else []
        return pending_reason(job.resources, others)

    # --- re-attachment -----------------------------------------------------------------

    def _reattach(self, job_id: str) -> None:
        """Pick up a job started by an earlier orchestrator process."""
        document = self.jobs.read(job_id)
        if document is None:
            return
        job = LocalJob.from_document(job_id, document)
        phase = document["phase"]
        if phase == "ended":
            self._finished[job_id] = JobStatus.model_validate(document["status"])
            return
        if phase == "queued":
            self._queued[job_id] = job
            return
        process = running_process(document)
        if process is None:
            # It ended while nobody watched; its result document (if any) tells how.
            self._finish(job, JobStatus(state=JobState.SUCCEEDED, reason="ended while detached"))
            return
        job.process = process
        job.started_at = (
            time.time() - seconds_since_start(process.started) if process.started else None
        )
        job.lease = lease_of(job_id, document)
        if job.lease is not None:
            self.allocator.restore(job.lease, LeaseHolder(process.pid, process.started))
        self._running[job_id] = job


def _store_libraries(store_is_local: bool) -> tuple[str, ...]:
    """What step processes need to reach the artifact store, beyond mlyard's runtime."""
    return () if store_is_local else ("s3fs",)
