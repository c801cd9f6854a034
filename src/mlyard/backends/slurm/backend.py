"""The SLURM backend: each step attempt is one batch job on an HPC cluster.

Commands go over one persistent SSH connection to the login node (or straight to the local
shell when mlyard runs there). One ``squeue`` per status poll covers every job of a run; jobs
that ended are read once more with ``scontrol show job`` and ``sacct`` (``sacct -c`` from the job
completion log where accounting is off) for their exit, reason and accounting. Submission is
idempotent per attempt: the job is named after the attempt id and its SLURM job id recorded on the
cluster, so a restarted orchestrator finds the job again instead of submitting it twice.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator, Sequence

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, Capability, SubmittedTask
from mlyard.backends.slurm.accounting import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    JobAccounting,
    parse_sacct,
    parse_scontrol_records,
    parse_squeue,
)
from mlyard.backends.slurm.environment import ensure_environment
from mlyard.backends.slurm.gpus import GPU_MEMORY_HINT, gpu_request
from mlyard.backends.slurm.profile import load_slurm_profile
from mlyard.backends.slurm.scripts import (
    SETUP_FAILED_EXIT,
    JobScript,
    job_name,
    render_job_script,
)
from mlyard.backends.slurm.ssh import ClusterShell, open_shell
from mlyard.backends.slurm.states import map_state
from mlyard.backends.slurm.transfer import (
    PreparedTask,
    S3Route,
    SftpRoute,
    redact,
    secret_exports,
)
from mlyard.errors import BackendError
from mlyard.extras import require_extra
from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.resources import Resources
from mlyard.settings import BackendProfile, Settings

_SECTION = "===mlyard-section==="
_LOG_TAIL_LINES = 20


class SlurmBackend(Backend):
    """Steps as SLURM batch jobs, reached over SSH or on the login node itself."""

    capability_hints = {
        Capability.FRACTIONAL_GPU: "Ask for a whole GPU (gpus=1), or set gres_shard = true in "
        "the profile if the site configures a `shard` GRES.",
        Capability.GPU_MEMORY: GPU_MEMORY_HINT,
        Capability.SERVICES: "SLURM runs pipeline steps only: serve or consume on this "
        "machine (the local backend) or on a kubernetes profile.",
    }
    # squeue about every second at first, backing off to 30 s; job ends are seen sooner through
    # wait_for_change, which watches the jobs' done markers on the login node (no SLURM query).
    poll_interval = (1.0, 30.0)

    def __init__(
        self, name: str, profile: BackendProfile, settings: Settings, store: ArtifactStore
    ) -> None:
        super().__init__(name, profile, settings, store)
        self.slurm = load_slurm_profile(name, profile)
        if not self.slurm.login_node_local:  # checked here, before a run is stored
            require_extra("slurm", needed_by=f"The slurm backend {name!r} over SSH")
        capabilities = {
            Capability.MULTI_NODE,
            Capability.GPU_TYPE,
            Capability.TIME_LIMIT,
            Capability.LAUNCHER_TORCHRUN,
            Capability.LAUNCHER_RAY,
            Capability.LOG_FOLLOW,
        }
        if self.slurm.gres_shard:
            capabilities.add(Capability.FRACTIONAL_GPU)
        if self.slurm.gpu_types:
            capabilities.add(Capability.GPU_MEMORY)
        self.capabilities = frozenset(capabilities)
        self._shell: ClusterShell | None = None
        self._workdir: str | None = None
        self._route: S3Route | SftpRoute | None = None
        self._finished: dict[str, JobStatus] = {}
        self._scripts: dict[str, str] = {}
        #: Done markers of jobs not yet seen ending, by job id.
        self._markers: dict[str, str] = {}
        self._venv: str | None = None

    # --- connection and layout ----------------------------------------------------------------

    @property
    def shell(self) -> ClusterShell:
        """The cluster shell, connected on first use (constructing the backend never connects)."""
        if self._shell is None:
            self._shell = open_shell(self.name, self.slurm)
        return self._shell

    @property
    def workdir(self) -> str:
        """``remote_workdir`` as an absolute path on the cluster, created on first use."""
        if self._workdir is None:
            directory = _shell_path(self.slurm.remote_workdir)
            done = self.shell.run(
                f"mkdir -p {directory}/logs {directory}/jobs && cd {directory} && pwd"
            )
            if not done.ok:
                raise BackendError(
                    f"Cannot create remote_workdir {self.slurm.remote_workdir!r} on the "
                    f"cluster: {done.output}",
                    hint="Set remote_workdir in the profile to a writable directory on the "
                    "cluster's shared file system.",
                )
            self._workdir = done.stdout.strip().splitlines()[-1]
        return self._workdir

    @property
    def route(self) -> S3Route | SftpRoute:
        if self._route is None:
            if self.slurm.data_route == "sftp":
                self._route = SftpRoute(self.store, self.shell, f"{self.workdir}/store")
            else:
                self._route = S3Route(self.store, shared_filesystem=self.slurm.login_node_local)
        return self._route

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None

    # --- submit ---------------------------------------------------------------------------------

    def _submit(self, task: SubmittedTask) -> JobHandle:
        spec = task.spec
        attempt_id = spec.attempt_id
        prepared = self.route.prepare(spec, task.task_uri)
        script = self.render_script(spec.attempt_id, spec.resources, prepared, spec.environment)
        name = job_name(attempt_id)
        jobs = f"{self.workdir}/jobs"
        script_path = shlex.quote(f"{jobs}/{attempt_id}.sbatch")
        id_path = shlex.quote(f"{jobs}/{attempt_id}.jobid")
        reads, secret_stdin = secret_exports(prepared.secret_environment)
        # One round trip, safe to repeat: a recorded job id or a job of this name wins over a
        # new sbatch, so a retried command or a restarted orchestrator never submits twice.
        command = (
            f"if [ -s {id_path} ]; then cat {id_path}; exit 0; fi; "
            f"existing=$(squeue --me --states=all -h --name={shlex.quote(name)} -o %i) || exit 90; "
            'if [ -n "$existing" ]; then echo "$existing" | head -n 1; exit 0; fi; '
            f"{reads} cat > {script_path} && "
            f"id=$(sbatch --parsable --export=ALL {script_path}) && "
            f'echo "${{id%%;*}}" > {id_path} && echo "${{id%%;*}}"'
        )
        done = self.shell.run(command, stdin=secret_stdin + script)
        if not done.ok:
            message = redact(done.output, prepared.secret_environment)
            raise BackendError(
                f"SLURM refused the job of step {spec.step_name!r}: {message}",
                hint="Check partition, account and qos in the backend profile, and the step's "
                "resources, against what the cluster offers (sinfo, sacctmgr show assoc).",
            )
        job_id = done.stdout.strip().splitlines()[-1].strip()
        self._scripts[job_id] = script
        self._markers[job_id] = _done_marker(jobs, attempt_id)
        return JobHandle(
            backend=self.name,
            job_id=job_id,
            data={
                "attempt_id": attempt_id,
                "log": f"{self.workdir}/logs/{attempt_id}.log",
                "script": f"{jobs}/{attempt_id}.sbatch",
                "route": self.route.name,
            },
        )

    def render_script(
        self,
        attempt_id: str,
        resources: Resources,
        prepared: PreparedTask,
        environment: dict[str, str] | None = None,
    ) -> str:
        """The job script of one attempt (no secrets in it: it is stored and shown)."""
        setup, python = self._job_environment()
        arguments = [prepared.task_uri]
        if prepared.endpoint_url:
            arguments += ["--endpoint-url", prepared.endpoint_url]
        job = JobScript(
            name=job_name(attempt_id),
            log_path=f"{self.workdir}/logs/{attempt_id}.log",
            workdir=self.workdir,
            python=python,
            task_arguments=arguments,
            setup=setup,
            environment=environment or {},
            done_marker=_done_marker(f"{self.workdir}/jobs", attempt_id),
        )
        return render_job_script(job, resources, self.slurm)

    def _job_environment(self) -> tuple[list[str], str]:
        """Setup lines and interpreter of jobs; with env = 'auto' the managed venv (created
        on first use, then reused by every run with the same recipe)."""
        if self.slurm.env != "auto":
            return list(self.slurm.setup), self.slurm.python
        if self._venv is None:
            self._venv = ensure_environment(self.shell, self.slurm, self.workdir)
        activate = f"source {shlex.quote(self._venv + '/bin/activate')}"
        return [*self.slurm.setup, activate], "python"

    # --- status ---------------------------------------------------------------------------------

    def wait_for_change(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning as soon as one of the jobs this backend
        follows wrote its done marker: one command on the login node that only stats files."""
        if not self._markers or timeout < 0.5:
            time.sleep(timeout)
            return
        markers = " ".join(shlex.quote(path) for path in self._markers.values())
        watch = f'while :; do for f in {markers}; do [ -e "$f" ] && exit 0; done; sleep 0.2; done'
        self.shell.run(f"timeout {timeout:.1f} bash -c {shlex.quote(watch)} 2>/dev/null; true")

    def _status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        statuses = {
            h.job_id: self._finished[h.job_id] for h in handles if h.job_id in self._finished
        }
        open_handles = [h for h in handles if h.job_id not in self._finished]
        if not open_handles:
            return statuses
        ids = ",".join(h.job_id for h in open_handles)
        queue = self.shell.run(f"squeue -h --states=all -j {ids} -o '{SQUEUE_FORMAT}'")
        # squeue answers "Invalid job id" when every job asked for was purged (MinJobAge):
        # those are looked up in accounting. Any other failure (controller down) must not be
        # taken for jobs that ended.
        if not queue.ok and "Invalid job id" not in queue.stderr:
            raise BackendError(
                f"squeue failed on the cluster: {queue.output}",
                hint="SLURM's controller may be restarting; mlyard polls again, and "
                "`mlyard runs resume` re-attaches to the jobs later.",
            )
        queued = parse_squeue(queue.stdout)
        ended: list[JobHandle] = []
        for handle in open_handles:
            if handle.job_id not in self._markers and handle.data.get("attempt_id"):
                # Re-attached after a restart: follow this job's done marker too.
                self._markers[handle.job_id] = _done_marker(
                    f"{self.workdir}/jobs", handle.data["attempt_id"]
                )
            facts = queued.get(handle.job_id)
            mapped = map_state(facts) if facts is not None else None
            if mapped is not None and not mapped.state.is_terminal:
                statuses[handle.job_id] = JobStatus(
                    state=mapped.state,
                    reason=mapped.reason,
                    submit_script=self._scripts.get(handle.job_id),
                )
            else:
                ended.append(handle)
        if ended:
            statuses.update(self._finish(ended))
        return statuses

    def _finish(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        """Final states of ended jobs, with accounting; SFTP results are fetched first."""
        accounts = self._accounting([h.job_id for h in handles])
        statuses: dict[str, JobStatus] = {}
        for handle in handles:
            account = accounts.get(handle.job_id)
            if account is None:
                statuses[handle.job_id] = JobStatus(
                    state=JobState.LOST,
                    reason=f"SLURM no longer knows job {handle.job_id}",
                )
                continue
            mapped = map_state(account.facts)
            if not mapped.state.is_terminal:  # ended between the two queries' views: poll again
                statuses[handle.job_id] = JobStatus(state=mapped.state, reason=mapped.reason)
                continue
            attempt_id = handle.data.get("attempt_id")
            if attempt_id and isinstance(self.route, SftpRoute):
                self.route.collect(attempt_id)
            reason = mapped.reason
            if account.facts.exit_code == SETUP_FAILED_EXIT:
                reason = f"{reason}:\n{self._log_tail(handle)}"
            status = JobStatus(
                state=mapped.state,
                reason=reason,
                infrastructure_failure=mapped.infrastructure_failure,
                exit_code=account.facts.exit_code,
                usage=account.usage(self.profile.costs),
                submit_script=self._script_of(handle),
            )
            self._finished[handle.job_id] = status
            self._markers.pop(handle.job_id, None)
            statuses[handle.job_id] = status
        return statuses

    def _accounting(self, job_ids: Sequence[str]) -> dict[str, JobAccounting]:
        """scontrol (recent jobs), sacct (with accounting) and sacct -c (job completion log),
        in one round trip; the richest answer per job wins."""
        ids = ",".join(job_ids)
        loop = " ".join(shlex.quote(job_id) for job_id in job_ids)
        query = (
            f"for id in {loop}; do scontrol show job -o $id 2>/dev/null; done; "
            f"echo {_SECTION}; sacct -n -P -j {ids} --format={SACCT_FIELDS} 2>/dev/null; "
            f"echo {_SECTION}; sacct -c -n -P -S now-7days -j {ids} --format={SACCT_FIELDS} "
            "2>/dev/null; true"
        )
        done = self.shell.run(query)
        sections = [*done.stdout.split(_SECTION), "", ""]
        from_jobcomp = parse_sacct(sections[2])
        from_scontrol = parse_scontrol_records(sections[0])
        from_sacct = parse_sacct(sections[1])
        merged: dict[str, JobAccounting] = {}
        for job_id in job_ids:
            for source in (from_sacct, from_scontrol, from_jobcomp):
                if job_id in source:
                    merged[job_id] = source[job_id]
                    break
        return merged

    def _script_of(self, handle: JobHandle) -> str | None:
        if handle.job_id not in self._scripts and handle.data.get("script"):
            data = self.shell.read_file(handle.data["script"])
            if data is not None:
                self._scripts[handle.job_id] = data.decode(errors="replace")
        return self._scripts.get(handle.job_id)

    def _log_tail(self, handle: JobHandle) -> str:
        log = handle.data.get("log")
        if not log:
            return ""
        done = self.shell.run(f"tail -n {_LOG_TAIL_LINES} {shlex.quote(log)} 2>/dev/null")
        return done.stdout.rstrip()

    # --- cancel and logs --------------------------------------------------------------------------

    def _cancel(self, handle: JobHandle) -> None:
        self.shell.run(f"scancel {shlex.quote(handle.job_id)} 2>/dev/null; true")

    def _logs(self, handle: JobHandle, *, follow: bool) -> Iterator[str]:
        log = handle.data.get("log")
        if not log:
            return
        offset = 0
        pending = ""
        while True:
            done = self.shell.run(f"tail -c +{offset + 1} {shlex.quote(log)} 2>/dev/null; true")
            chunk = done.stdout
            offset += len(chunk.encode())
            pending += chunk
            *lines, pending = pending.split("\n")
            yield from lines
            if not follow:
                break
            if self._status([handle])[handle.job_id].state.is_terminal:
                follow = False  # one last read picks up the final lines
                continue
            time.sleep(1.0)
        if pending:
            yield pending

    # --- resources --------------------------------------------------------------------------------

    def _check_resources(self, resources: Resources) -> None:
        # What the capabilities cannot say: a GPU model the profile does not list, a shard
        # whose model cannot be picked by node feature.
        gpu_request(resources, self.slurm)


def _shell_path(path: str) -> str:
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _done_marker(jobs_directory: str, attempt_id: str) -> str:
    return f"{jobs_directory}/{attempt_id}.done"
