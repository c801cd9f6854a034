"""A container's process: started in its own process group with its log file as stdout and
stderr, watched for its memory limit and its probes, and reported as containerd reports it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from tests.kubefake import dns
from tests.kubefake.containers import memory_limit, probe
from tests.kubefake.store import now_rfc3339

if TYPE_CHECKING:
    from tests.kubefake.containers import Container
    from tests.kubefake.pod_worker import PodWorker

_EXEC_ERROR = (
    "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
    'runc create failed: unable to start container process: exec: "{0}": {1}: unknown'
)


def _tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


async def _watch_memory(worker: PodWorker, container: Container, limit: int) -> None:
    """The cgroup OOM killer, by polling: over the limit, the whole group gets SIGKILL."""
    assert container.process is not None
    while container.process.returncode is None:
        if _tree_rss(container.process.pid) > limit:
            container.oom_killed = True
            worker._signal(container, signal.SIGKILL)
            return
        await asyncio.sleep(0.1)


async def _run_probes(
    worker: PodWorker, container: Container, env: dict[str, str], cwd: str
) -> None:
    """Startup, then readiness and liveness probes, driving ``ready`` and liveness restarts."""
    spec = container.spec
    process = container.process
    assert process is not None
    startup, readiness, liveness = (
        spec.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")
    )
    if startup:
        await asyncio.sleep(float(startup.get("initialDelaySeconds", 0)))
        failures = 0
        while process.returncode is None:
            if await probe(startup, spec, worker.ip, env, cwd) is None:
                break
            failures += 1
            if failures >= int(startup.get("failureThreshold", 3)):
                await _liveness_kill(worker, container, "Startup")
                return
            await asyncio.sleep(float(startup.get("periodSeconds", 10)))
    container.started = True
    if not readiness:
        container.ready = True
        worker.write_status()
    tasks = []
    if readiness:
        tasks.append(_probe_loop(worker, container, readiness, env, cwd, "Readiness"))
    if liveness:
        tasks.append(_probe_loop(worker, container, liveness, env, cwd, "Liveness"))
    await asyncio.gather(*tasks)


async def _probe_loop(
    worker: PodWorker,
    container: Container,
    spec: dict[str, Any],
    env: dict[str, str],
    cwd: str,
    kind: str,
) -> None:
    process = container.process
    assert process is not None
    await asyncio.sleep(float(spec.get("initialDelaySeconds", 0)))
    successes = failures = 0
    while process.returncode is None:
        failure = await probe(spec, container.spec, worker.ip, env, cwd)
        ok = failure is None
        if process.returncode is not None:
            return
        successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
        if not ok:
            worker.event(
                "Unhealthy",
                f"{kind} probe failed: {failure}",
                container,
                "Warning",
            )
        if kind == "Readiness":
            ready = container.ready
            if ok and successes >= int(spec.get("successThreshold", 1)):
                ready = True
            if not ok and failures >= int(spec.get("failureThreshold", 3)):
                ready = False
            if ready != container.ready:
                container.ready = ready
                worker.write_status()
        elif not ok and failures >= int(spec.get("failureThreshold", 3)):
            await _liveness_kill(worker, container, kind)
            return
        await asyncio.sleep(float(spec.get("periodSeconds", 10)))


async def _liveness_kill(worker: PodWorker, container: Container, kind: str) -> None:
    container.liveness_failed = True
    worker.event(
        "Killing",
        f"Container {container.name} failed {kind.lower()} probe, will be restarted",
        container,
    )
    worker._signal(container, signal.SIGTERM)
    grace = int(worker.spec.get("terminationGracePeriodSeconds", 30))
    assert container.process is not None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(container.process.wait(), timeout=grace)
    worker._signal(container, signal.SIGKILL)


async def _enforce_grace(worker: PodWorker, container: Container) -> None:
    """After a deletion's grace period, SIGKILL what is still running."""
    assert container.process is not None
    while container.process.returncode is None:
        deadline = worker.grace_deadline
        if worker.terminating and deadline is not None and time.monotonic() >= deadline:
            worker._signal(container, signal.SIGKILL)
            return
        await asyncio.sleep(0.1)


async def run_container_process(
    worker: PodWorker, container: Container, env: dict[str, str], argv: list[str]
) -> int:
    """Start ``argv`` for ``container`` and return its exit code when it ends."""
    container.directory.mkdir(parents=True, exist_ok=True)
    working_dir = container.spec.get("workingDir")
    cwd = working_dir if working_dir and Path(working_dir).is_dir() else str(container.directory)
    container.ready = False
    container.started = False
    container.oom_killed = False
    container.liveness_failed = False
    container.process = None
    if not argv:
        return _start_failed(worker, container, "", "no command specified")
    executable = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else argv[0]
    if executable is None or not Path(executable).exists():
        return _start_failed(worker, container, argv[0], "executable file not found in $PATH")
    worker.event("Created", f"Created container: {container.name}", container)
    worker.refresh_hosts()
    argv = dns.wrap(argv, worker.hosts_path, worker.hostname, worker.service_account_dir())
    with container.log_path().open("ab") as log:
        try:
            container.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError:
            return _start_failed(worker, container, argv[0], "executable file not found in $PATH")
        except PermissionError:
            return _start_failed(worker, container, argv[0], "permission denied")
    started_at = now_rfc3339()
    container.state = {"running": {"startedAt": started_at}}
    worker.event("Started", f"Started container {container.name}", container)
    worker.kubelet.record_pids()
    worker.write_status()
    helpers = [
        asyncio.create_task(_run_probes(worker, container, env, cwd)),
        asyncio.create_task(_enforce_grace(worker, container)),
    ]
    limit = memory_limit(container)
    if limit is not None:
        helpers.append(asyncio.create_task(_watch_memory(worker, container, limit)))
    if worker.terminating:
        worker._signal(container, signal.SIGKILL)
    try:
        returncode = await container.process.wait()
    finally:
        for helper in helpers:
            helper.cancel()
    exit_code = returncode if returncode >= 0 else 128 - returncode
    if container.oom_killed:
        reason, exit_code = "OOMKilled", 137
    else:
        reason = "Completed" if exit_code == 0 else "Error"
    container.ready = False
    container.state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
            "containerID": container.status().get("containerID"),
        }
    }
    worker.kubelet.record_pids()
    worker.write_status()
    return exit_code


def _start_failed(worker: PodWorker, container: Container, executable: str, why: str) -> int:
    message = _EXEC_ERROR.format(executable, why)
    now = now_rfc3339()
    container.state = {
        "terminated": {
            "exitCode": 128,
            "reason": "StartError",
            "message": message,
            "startedAt": "1970-01-01T00:00:00Z",
            "finishedAt": now,
        }
    }
    worker.event("Failed", f"Error: {message}", container, "Warning")
    worker.write_status()
    return 128


def kill_group(pgid: int, sig: int) -> None:
    """Signal a container's process group; one that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
