"""One pod on a fake node: its containers' lifecycles and the pod status the kubelet reports."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.kubefake.containers import (
    Container,
    ContainerConfigError,
    container_env,
    expand,
    pod_env_base,
)
from tests.kubefake.dns import hosts_file
from tests.kubefake.errors import ApiError
from tests.kubefake.images import pull_image
from tests.kubefake.process import kill_group, run_container_process
from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Obj, now_rfc3339

if TYPE_CHECKING:
    from tests.kubefake.kubelet import Kubelet

_POD = BY_KIND["Pod"]


class PodWorker:
    """Runs one pod: images, environment, processes, restarts, probes, termination."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.store = kubelet.cluster.store
        meta = pod["metadata"]
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.node = pod["spec"]["nodeName"]
        self.spec = pod["spec"]
        self.directory = kubelet.settings.state_dir / "pods" / self.uid
        self.ip = kubelet.allocate_ip()
        waiting = "PodInitializing" if self.spec.get("initContainers") else "ContainerCreating"
        self.init_containers = [
            Container(c, True, self.directory / c["name"])
            for c in self.spec.get("initContainers") or []
        ]
        self.containers = [
            Container(c, False, self.directory / c["name"], waiting)
            for c in self.spec.get("containers") or []
        ]
        self.start_time = now_rfc3339()
        self.terminating = False
        self.grace_deadline: float | None = None
        self.done = False
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.initialized = not self.init_containers
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self.hostname = self.spec.get("hostname") or self.name
        self.hosts_path = self.directory / "hosts"
        self._hosts = ""

    # -- control from the kubelet -----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    def terminate(self, grace: int) -> None:
        """The pod was deleted: SIGTERM now, SIGKILL after ``grace`` seconds."""
        deadline = time.monotonic() + grace
        if self.terminating and self.grace_deadline is not None and deadline >= self.grace_deadline:
            return
        first = not self.terminating
        self.terminating = True
        self.grace_deadline = deadline
        for container in self._all():
            if container.process is not None and container.process.returncode is None:
                if first:
                    self.event("Killing", f"Stopping container {container.name}", container)
                self._signal(container, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        self._wake.set()

    def kill_now(self) -> None:
        """The pod is gone from the API: kill its processes at once."""
        for container in self._all():
            self._signal(container, signal.SIGKILL)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.done = True

    def refresh_hosts(self) -> None:
        """Rewrite the pod's /etc/hosts in place (the bind mount keeps the inode)."""
        pod = self.store.find(_POD, self.namespace, self.name)
        if pod is None:
            return
        content = hosts_file(self.store, pod, self.ip)
        if content != self._hosts:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.hosts_path.open("w") as handle:
                handle.write(content)
            self._hosts = content

    def service_account_dir(self) -> Path | None:
        """The projected token volume: token, ca.crt, namespace (None when not mounted)."""
        if self.spec.get("automountServiceAccountToken") is False:
            return None
        account = self.spec.get("serviceAccountName") or "default"
        directory = self.directory / "serviceaccount"
        if not directory.exists():
            directory.mkdir(parents=True)
            cluster = self.kubelet.cluster
            token = cluster.service_account_token(self.namespace, account)
            (directory / "token").write_text(token)
            (directory / "ca.crt").write_bytes((cluster.state_dir / "ca.crt").read_bytes())
            (directory / "namespace").write_text(self.namespace)
        return directory

    def process_groups(self) -> list[int]:
        return [
            c.process.pid
            for c in self._all()
            if c.process is not None and c.process.returncode is None
        ]

    def log_path(self, name: str, previous: bool) -> Path | None:
        for container in self._all():
            if container.name == name:
                if previous:
                    return (
                        container.directory / f"{container.restart_count - 1}.log"
                        if container.restart_count
                        else None
                    )
                return container.log_path()
        return None

    def is_running(self, name: str) -> bool:
        return any(c.name == name and "running" in c.state for c in self._all())

    # -- the pod's life ----------------------------------------------------------------------

    def _all(self) -> list[Container]:
        return self.init_containers + self.containers

    async def _run(self) -> None:
        try:
            self.write_status()
            deadline = self.spec.get("activeDeadlineSeconds")
            watchdog = (
                asyncio.get_running_loop().create_task(self._deadline(deadline))
                if deadline
                else None
            )
            for container in self.init_containers:
                if not await self._run_container(container) and not self.terminating:
                    self.phase = "Failed"
                    break
            else:
                self.initialized = True
                self.write_status()
                await asyncio.gather(*(self._run_container(c) for c in self.containers))
            if watchdog is not None:
                watchdog.cancel()
            self._finish()
            while not self.terminating:
                await self._wait(1.0)
            self.write_status()
            with contextlib.suppress(ApiError):  # gone already (force-deleted, node lost)
                self.store.delete(_POD, self.namespace, self.name, grace_seconds=0)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # keep the fake alive; the log says what broke
            print(f"kubefake: pod worker {self.namespace}/{self.name} failed: {exc!r}", flush=True)
            raise
        finally:
            for container in self._all():
                self._signal(container, signal.SIGKILL)
            self.done = True
            self.kubelet.record_pids()

    async def _deadline(self, seconds: int) -> None:
        await asyncio.sleep(seconds)
        self.reason, self.message = (
            "DeadlineExceeded",
            ("Pod was active on the node longer than the specified deadline"),
        )
        self.event("DeadlineExceeded", self.message, None, "Warning")
        self.terminating = True
        for container in self._all():
            self._signal(container, signal.SIGKILL)
        self._wake.set()

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def sleep_unless_terminating(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.terminating and time.monotonic() < end:
            await self._wait(min(0.5, end - time.monotonic()))

    def backoff(self, attempt: int) -> float:
        settings = self.kubelet.settings
        return min(settings.backoff_base * 2 ** max(attempt - 1, 0), settings.backoff_max)

    async def _run_container(self, container: Container) -> bool:
        """Run ``container`` until it needs no restart; True when it ended with exit code 0."""
        attempt = 0
        while not self.terminating:
            if not await pull_image(self, container):
                return False
            try:
                env = self._environment(container)
            except ContainerConfigError as exc:
                container.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                }
                self.event("Failed", f"Error: {exc}", container, "Warning")
                self.write_status()
                attempt += 1
                await self.sleep_unless_terminating(self.backoff(attempt))
                continue
            exit_code = await self._execute(container, env)
            policy = self.spec.get("restartPolicy", "Always")
            if container.init and policy == "Always":
                policy = "OnFailure"
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            if not restart or self.terminating:
                return exit_code == 0
            attempt += 1
            delay = self.backoff(attempt)
            container.last_state = container.state
            container.restart_count += 1
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": (
                        f"back-off {int(delay)}s restarting failed container={container.name} "
                        f"pod={self.name}_{self.namespace}({self.uid})"
                    ),
                }
            }
            self.event(
                "BackOff",
                f"Back-off restarting failed container {container.name} in "
                f"pod {self.name}_{self.namespace}({self.uid})",
                container,
                "Warning",
            )
            self.write_status()
            await self.sleep_unless_terminating(delay)
        return False

    def _environment(self, container: Container) -> dict[str, str]:
        pod = self.store.find(_POD, self.namespace, self.name) or {"metadata": {}, "spec": {}}
        pod.setdefault("status", {})["podIP"] = self.ip
        base = pod_env_base(self.kubelet.settings.python_bin, pod, self.kubelet.cluster.address)
        env = container_env(self.store, pod, container.spec)
        gpus = self.kubelet.cluster.scheduler.assigned_devices(self.uid, container.name)
        if gpus:
            env.setdefault("NVIDIA_VISIBLE_DEVICES", ",".join(gpus))
        return {**base, **env}

    def _command(self, container: Container, env: dict[str, str]) -> list[str]:
        entrypoint, cmd = self.kubelet.cluster.images.entrypoint(container.spec.get("image", ""))
        command = container.spec.get("command") or entrypoint
        args = container.spec.get("args")
        if args is None:
            args = cmd if not container.spec.get("command") else []
        return [expand(str(part), env) for part in [*command, *args]]

    async def _execute(self, container: Container, env: dict[str, str]) -> int:
        """Start the container's process, watch it, and return its exit code."""
        return await run_container_process(self, container, env, self._command(container, env))

    def _finish(self) -> None:
        codes = [c.state.get("terminated", {}).get("exitCode") for c in self.containers]
        if self.reason == "DeadlineExceeded" or self.phase == "Failed":
            self.phase = "Failed"
        elif codes and all(code == 0 for code in codes):
            self.phase = "Succeeded"
        else:
            self.phase = "Failed"
        self.write_status()

    # -- reporting ---------------------------------------------------------------------------

    def event(
        self, reason: str, message: str, container: Container | None, type_: str = "Normal"
    ) -> None:
        pod = self.store.find(_POD, self.namespace, self.name)
        if pod is None:
            return
        field = None
        if container is not None:
            kind = "initContainers" if container.init else "containers"
            field = f"spec.{kind}{{{container.name}}}"
        self.kubelet.cluster.recorder.record(
            pod, reason, message, type_, "kubelet", self.node, field
        )

    def _signal(self, container: Container, sig: int) -> None:
        if container.process is not None and container.process.returncode is None:
            kill_group(container.process.pid, sig)

    def _condition(self, kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
        value = "True" if ok else "False"
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != value:
            self._transitions[kind] = (value, now_rfc3339())
        condition: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }
        if reason:
            condition["reason"] = reason
        return condition

    def write_status(self) -> None:
        """Report the containers' states, the phase and the conditions in the pod's status."""
        pod = self.store.find(_POD, self.namespace, self.name)
        if pod is None:
            return
        running = any("running" in c.state for c in self.containers)
        phase = self.phase
        if phase == "Pending" and self.initialized and running:
            phase = self.phase = "Running"
        ready = (
            bool(self.containers) and all(c.ready for c in self.containers) and phase == "Running"
        )
        status = pod.setdefault("status", {})
        kept = [
            c
            for c in status.get("conditions", [])
            if c["type"] in ("PodScheduled", "DisruptionTarget")
        ]
        not_ready = (
            None
            if ready
            else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")
        )
        status["conditions"] = [
            self._condition("PodReadyToStartContainers", True),  # the sandbox is made at once
            self._condition(
                "Initialized",
                self.initialized,
                None if self.initialized else "ContainersNotInitialized",
            ),
            self._condition("Ready", ready, not_ready),
            self._condition("ContainersReady", ready, not_ready),
            *kept,
        ]
        status.update(
            {
                "phase": phase,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "startTime": self.start_time,
                "containerStatuses": [c.status() for c in self.containers],
            }
        )
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        self.store.update(_POD, pod)
