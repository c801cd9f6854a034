"""kube-proxy for ClusterIP Services: a listener on each Service's cluster IP (a loopback
address) and port that forwards each connection to a ready pod the Service selects, in turn."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from tests.kubefake.resources import BY_KIND
from tests.kubefake.selectors import matches_requirements
from tests.kubefake.store import Change, Obj

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_SERVICE, _POD = BY_KIND["Service"], BY_KIND["Pod"]


def _ready(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def _target_port(pod: Obj, target: Any) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class ServiceProxy:
    """Keeps one listener per (cluster IP, port) of the Services in the store."""

    def __init__(self, cluster: Cluster) -> None:
        self.store = cluster.store
        self._servers: dict[tuple[str, int], tuple[asyncio.Server, str, str]] = {}
        self._turn = itertools.count()
        self._wake = asyncio.Event()
        self.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.rtype.kind == "Service":
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                await self._sync()
                await self._wake.wait()
        finally:
            for server, _ns, _name in self._servers.values():
                server.close()

    async def _sync(self) -> None:
        wanted: dict[tuple[str, int], tuple[str, str, dict[str, Any]]] = {}
        for service in self.store.peek(_SERVICE):
            spec = service.get("spec", {})
            if spec.get("clusterIP") in (None, "", "None") or not spec.get("selector"):
                continue
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") == "TCP":
                    wanted[(spec["clusterIP"], int(port["port"]))] = (
                        service["metadata"]["namespace"],
                        service["metadata"]["name"],
                        port,
                    )
        for key in set(self._servers) - set(wanted):
            self._servers.pop(key)[0].close()
        for key, (namespace, name, port) in wanted.items():
            if key in self._servers:
                continue
            handler = self._handler(namespace, name, port.get("targetPort", port["port"]))
            with contextlib.suppress(OSError):  # a port taken on this machine is left out
                server = await asyncio.start_server(handler, key[0], key[1])
                self._servers[key] = (server, namespace, name)

    def _handler(self, namespace: str, name: str, target: Any) -> Any:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            service = self.store.find(_SERVICE, namespace, name)
            selector = [
                (k, "=", frozenset([v]))
                for k, v in ((service or {}).get("spec", {}).get("selector") or {}).items()
            ]
            endpoints = [
                p
                for p in self.store.peek(_POD)
                if p["metadata"]["namespace"] == namespace
                and _ready(p)
                and matches_requirements(p["metadata"].get("labels"), selector)
            ]
            if not endpoints:
                writer.close()  # no endpoints: the connection is refused
                return
            pod = endpoints[next(self._turn) % len(endpoints)]
            port = _target_port(pod, target)
            try:
                if port is None:
                    raise OSError("named port not found")
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    pod["status"]["podIP"], port
                )
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

        return forward
