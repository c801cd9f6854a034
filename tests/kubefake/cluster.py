"""The whole fake cluster in one object: the store, the API's helpers and the control loops
(scheduler, controllers, kubelet), with the objects a new cluster starts with."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse, Response

from tests.kubefake.admission import ServiceIPs, admit, complete_node, default_node
from tests.kubefake.auth import ADMIN_USER, RESTRICTED_USER, Authorizer
from tests.kubefake.errors import ApiError, bad_request
from tests.kubefake.events import EventRecorder
from tests.kubefake.gc import GarbageCollector, TtlController
from tests.kubefake.images import ImageCatalog
from tests.kubefake.job_controller import JobController
from tests.kubefake.kubelet import Kubelet, KubeletSettings
from tests.kubefake.logs import LogEndpoint
from tests.kubefake.proxy import ServiceProxy
from tests.kubefake.resources import BY_KIND
from tests.kubefake.scheduler import Scheduler
from tests.kubefake.store import Store, now_rfc3339
from tests.kubefake.workloads import DeploymentController, ReplicaSetController

_POD, _NODE, _NS = BY_KIND["Pod"], BY_KIND["Node"], BY_KIND["Namespace"]
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "mlyard")


class Cluster:
    """Store, auth, recorder, kubelet, scheduler and controllers of one fake cluster."""

    def __init__(self, state_dir: Path, python_bin: str, history: int, backoff: float) -> None:
        self.state_dir = state_dir
        self.store = Store(history)
        self.request_count = 0
        self.address = "127.0.0.1:0"
        self.admin_token = secrets.token_urlsafe(24)
        self.restricted_token = secrets.token_urlsafe(24)
        self.authorizer = Authorizer(
            {self.admin_token: ADMIN_USER, self.restricted_token: RESTRICTED_USER},
            state_dir / "rbac.json",
        )
        self._account_tokens: dict[tuple[str, str], str] = {}
        self.recorder = EventRecorder(self.store)
        self.ips = ServiceIPs()
        self.images = ImageCatalog(state_dir / "images.json")
        self.kubelet = Kubelet(self, KubeletSettings(state_dir, python_bin, backoff, backoff * 10))
        self.scheduler = Scheduler(self)
        self.logs = LogEndpoint(self)
        self._loops = [
            self.kubelet.run,
            self.scheduler.run,
            JobController(self).run,
            ReplicaSetController(self).run,
            DeploymentController(self).run,
            GarbageCollector(self).run,
            TtlController(self).run,
            ServiceProxy(self).run,
            self._serviceaccounts,
        ]

    def bootstrap(self) -> None:
        """Namespaces, their default ServiceAccounts, and the nodes of ``nodes.json``."""
        for name in INITIAL_NAMESPACES:
            self.store.create(_NS, admit(self.store, _NS, {"metadata": {"name": name}}, self.ips))
        nodes_file = self.state_dir / "nodes.json"
        nodes = json.loads(nodes_file.read_text()) if nodes_file.exists() else [default_node()]
        for node in nodes:
            self.store.create(_NODE, complete_node(node))
        for name, value in (
            ("system-cluster-critical", 2000000000),
            ("system-node-critical", 2000001000),
        ):
            self.store.create(
                BY_KIND["PriorityClass"],
                {
                    "metadata": {"name": name},
                    "value": value,
                    "preemptionPolicy": "PreemptLowerPriority",
                    "description": "Used for system critical pods that must "
                    "not be moved from their current node.",
                },
            )
        self._ensure_serviceaccounts()
        self.store.create(
            BY_KIND["Service"],
            {  # the API server's own Service
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": "127.96.0.1",
                    "clusterIPs": ["127.96.0.1"],
                    "ports": [
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
                    ],
                    "sessionAffinity": "None",
                    "ipFamilies": ["IPv4"],
                    "ipFamilyPolicy": "SingleStack",
                    "internalTrafficPolicy": "Cluster",
                },
                "status": {"loadBalancer": {}},
            },
        )

    def service_account_token(self, namespace: str, account: str) -> str:
        """A bearer token for ``system:serviceaccount:NS:NAME`` (an admin unless rbac.json
        names it), as a projected token volume carries it."""
        key = (namespace, account)
        if key not in self._account_tokens:
            token = secrets.token_urlsafe(24)
            self.authorizer.add_token(token, f"system:serviceaccount:{namespace}:{account}")
            self._account_tokens[key] = token
        return self._account_tokens[key]

    def _ensure_serviceaccounts(self) -> None:
        account = BY_KIND["ServiceAccount"]
        for namespace in self.store.peek(_NS):
            name = namespace["metadata"]["name"]
            if self.store.find(account, name, "default") is None and not namespace["metadata"].get(
                "deletionTimestamp"
            ):
                self.store.create(account, {"metadata": {"name": "default", "namespace": name}})

    async def _serviceaccounts(self) -> None:
        """The service-account controller: every namespace gets ``default``."""
        while True:
            self._ensure_serviceaccounts()
            await asyncio.sleep(0.2)

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start every control loop; one that fails is logged and started again."""
        return [asyncio.get_running_loop().create_task(_supervised(loop)) for loop in self._loops]

    # -- subresources with side effects --------------------------------------------------------

    def evict(self, namespace: str, name: str, body: dict[str, Any]) -> Response:
        """``pods/eviction``: DisruptionTarget on the pod, then a graceful delete."""
        pod = self.store.get(_POD, namespace, name)
        status = pod.setdefault("status", {})
        if status.get("phase") not in ("Succeeded", "Failed"):
            status["conditions"] = [
                c for c in status.get("conditions", []) if c["type"] != "DisruptionTarget"
            ] + [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now_rfc3339(),
                    "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting",
                }
            ]
            self.store.update(_POD, pod)
        options = body.get("deleteOptions") or {}
        self.store.delete(_POD, namespace, name, options.get("gracePeriodSeconds"))
        return JSONResponse(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status_code=201,
        )

    def bind(self, namespace: str, name: str, body: dict[str, Any]) -> Response:
        """``pods/binding``: what a custom scheduler calls."""
        pod = self.store.get(_POD, namespace, name)
        if pod["spec"].get("nodeName"):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on pods/binding "{name}": pod '
                f'{name} is already assigned to node "{pod["spec"]["nodeName"]}"',
                reason="Conflict",
            )
        node = (body.get("target") or {}).get("name")
        if not node:
            raise bad_request("binding target name is required")
        pod["spec"]["nodeName"] = node
        self.store.update(_POD, pod)
        return JSONResponse(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status_code=201,
        )


async def _supervised(loop: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            print(
                f"kubefake: {getattr(loop, '__qualname__', loop)} failed; restarting it:\n"
                f"{traceback.format_exc()}",
                flush=True,
            )
            await asyncio.sleep(0.5)


def bind_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 and a free port (no race with other services)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, a response's body waits for the client's
    # delayed ACK of its headers (40 ms a request over TLS).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", int(os.environ.get("KUBE_FAKE_PORT", "0"))))
    sock.listen(128)
    return sock
