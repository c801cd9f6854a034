"""The kubelet of every fake node: each pod bound to a node gets a worker that pulls its images,
resolves its environment and runs each container's command as a local process (in its own
process group, in a directory per pod, with its own loopback address as the pod IP), restarts it
per ``restartPolicy``, probes it, kills it when it exceeds its memory limit or its pod is deleted,
and reports all of it in the pod's status and Events, as the real kubelet does."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.kubefake.dns import dns_key
from tests.kubefake.pod_worker import PodWorker
from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Change

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_POD = BY_KIND["Pod"]


@dataclass(frozen=True)
class KubeletSettings:
    """Where pods run and how fast the kubelet retries (the real one starts back-off at 10 s;
    the fake's default is shorter so that tests stay fast)."""

    state_dir: Path
    python_bin: str
    backoff_base: float = 1.0
    backoff_max: float = 10.0


class Kubelet:
    """Starts a worker for every pod bound to a node, and stops it when the pod goes."""

    def __init__(self, cluster: Cluster, settings: KubeletSettings) -> None:
        self.cluster = cluster
        self.settings = settings
        self.workers: dict[str, PodWorker] = {}
        self.pulled: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._next_ip = int(ipaddress.IPv4Address("127.0.1.1"))
        self._pids_file = settings.state_dir / "kubelet-pids.json"
        self._dns_key: frozenset[tuple[str, ...]] = frozenset()
        cluster.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.rtype.kind in ("Pod", "Secret", "ConfigMap", "Service"):
            self._wake.set()

    def allocate_ip(self) -> str:
        """The next free loopback address (127.0.x.y), so pods bind the same port side by side."""
        while True:
            self._next_ip += 1
            address = ipaddress.IPv4Address(self._next_ip)
            if address.packed[3] not in (0, 255):
                return str(address)

    async def run(self) -> None:
        """Reconcile workers with the pods in the store until cancelled."""
        while True:
            self._wake.clear()
            self.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def sync(self) -> None:
        nodes = {n["metadata"]["name"] for n in self.cluster.store.peek(BY_KIND["Node"])}
        seen = set()
        for pod in self.cluster.store.peek(_POD):
            uid = pod["metadata"]["uid"]
            node = pod.get("spec", {}).get("nodeName")
            if not node:
                continue
            seen.add(uid)
            worker = self.workers.get(uid)
            if worker is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue  # finished before this kubelet knew it (e.g. marked by pod GC)
                if node not in nodes:
                    continue
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
            elif node not in nodes:
                worker.kill_now()  # the node is gone, and its processes with it
            else:
                worker.wake()
            if pod["metadata"].get("deletionTimestamp"):
                worker.terminate(int(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
        key = dns_key(self.cluster.store)
        refresh, self._dns_key = key != self._dns_key, key
        for uid, worker in list(self.workers.items()):
            if refresh and uid in seen and worker.hosts_path.exists():
                worker.refresh_hosts()
            if uid not in seen:
                worker.kill_now()
            if worker.done:
                del self.workers[uid]

    def record_pids(self) -> None:
        """Write the process groups of running containers, for ``kube-fake.sh stop``."""
        groups = sorted(pid for w in self.workers.values() for pid in w.process_groups())
        self._pids_file.write_text(json.dumps(groups))

    # -- for the log endpoint ----------------------------------------------------------------

    def log_path(self, pod_uid: str, container: str, previous: bool) -> Path | None:
        worker = self.workers.get(pod_uid)
        if worker is not None:
            return worker.log_path(container, previous)
        directory = self.settings.state_dir / "pods" / pod_uid / container
        logs = sorted(directory.glob("*.log"), key=lambda p: int(p.stem))
        if previous:
            return logs[-2] if len(logs) > 1 else None
        return logs[-1] if logs else None

    def is_running(self, pod_uid: str, container: str) -> bool:
        worker = self.workers.get(pod_uid)
        return worker is not None and worker.is_running(container)

    async def shutdown(self) -> None:
        """Kill every container (the server is stopping)."""
        for worker in list(self.workers.values()):
            worker.kill_now()
        await asyncio.sleep(0)
        self.record_pids()
