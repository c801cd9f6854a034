"""What the kubelet computes for a container before it starts it: the environment (values,
Secret / ConfigMap / field / resource references, ``envFrom``) and ``$(VAR)`` expansion; and
the three probe kinds."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import re
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Obj, Store


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError; the message is the kubelet's."""


def _secret_data(secret: Obj) -> dict[str, str]:
    return {
        k: base64.b64decode(v).decode(errors="replace")
        for k, v in (secret.get("data") or {}).items()
    }


def _source(
    store: Store, kind: str, namespace: str, name: str, optional: bool
) -> dict[str, str] | None:
    obj = store.find(BY_KIND[kind], namespace, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        return _secret_data(obj)
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def _field(pod: Obj, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    labelled = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if labelled:
        return str((meta.get(labelled.group(1)) or {}).get(labelled.group(2), ""))
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": status.get("podIP"),
    }
    return str(values.get(path) or "")


def _resource_field(container: dict[str, Any], ref: dict[str, Any]) -> str:
    section, _, name = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(name)
    if value is None:
        return str(os.cpu_count() or 1) if name == "cpu" else str(_memory_total())
    divisor = parse_quantity(ref.get("divisor", "1"))
    return str(math.ceil(parse_quantity(value) / divisor))


def _memory_total() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` references as the kubelet expands them; ``$$`` escapes; unknown ones stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def container_env(store: Store, pod: Obj, container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from its spec; raises ContainerConfigError."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key in source:
                ref = source[key]
                data = _source(store, kind, namespace, ref["name"], bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        name, value_from = var["name"], var.get("valueFrom")
        if value_from is None:
            env[name] = expand(var.get("value", ""), env)
            continue
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in value_from:
                ref = value_from[key]
                optional = bool(ref.get("optional"))
                data = _source(store, kind, namespace, ref["name"], optional)
                if data is None:
                    break
                if ref["key"] not in data:
                    if optional:
                        break
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                    )
                env[name] = data[ref["key"]]
        if "fieldRef" in value_from:
            env[name] = _field(pod, value_from["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in value_from:
            env[name] = _resource_field(container, value_from["resourceFieldRef"])
    return env


def _port(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} not found")


async def probe(
    spec: dict[str, Any], container: dict[str, Any], pod_ip: str, env: dict[str, str], cwd: str
) -> str | None:
    """Run one probe (httpGet, tcpSocket or exec) within its ``timeoutSeconds``: None when it
    succeeds, else why it failed, in the kubelet's words."""
    timeout = float(spec.get("timeoutSeconds", 1))
    action = spec.get("httpGet") or spec.get("tcpSocket") or {}
    host = action.get("host") or pod_ip
    try:
        port = _port(container, action.get("port")) if "exec" not in spec else 0
    except ValueError as exc:
        return str(exc)
    url = f"{action.get('scheme', 'HTTP').lower()}://{host}:{port}{action.get('path', '/')}"
    try:
        return await asyncio.wait_for(_probe_once(spec, host, port, env, cwd), timeout)
    except TimeoutError:
        if "exec" in spec:
            return f"command timed out after {timeout:g}s"
        if "httpGet" in spec:
            return (
                f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while '
                "awaiting headers)"
            )
        return f"dial tcp {host}:{port}: i/o timeout"
    except OSError as exc:
        refused = (
            "connect: connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        )
        dial = f"dial tcp {host}:{port}: {refused}"
        return f'Get "{url}": {dial}' if "httpGet" in spec else dial


async def _probe_once(
    spec: dict[str, Any], host: str, port: int, env: dict[str, str], cwd: str
) -> str | None:
    if "exec" in spec:
        process = await asyncio.create_subprocess_exec(
            *spec["exec"]["command"],
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
        return None if process.returncode == 0 else output.decode(errors="replace").strip()
    action = spec.get("httpGet") or spec.get("tcpSocket") or {}
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if "tcpSocket" in spec:
            return None
        headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in action.get("httpHeaders") or [])
        writer.write(
            f"GET {action.get('path', '/')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"User-Agent: kube-probe/1.34\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        parts = (await reader.readline()).split()
        code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        return None if 200 <= code < 400 else f"HTTP probe failed with statuscode: {code}"
    finally:
        writer.close()


class Container:
    """What the kubelet knows about one container of the pod."""

    def __init__(
        self, spec: dict[str, Any], init: bool, directory: Path, waiting: str = "ContainerCreating"
    ) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.directory = directory
        # main containers of a pod with init containers wait as PodInitializing
        self.state: dict[str, Any] = {"waiting": {"reason": waiting}}
        self.last_state: dict[str, Any] = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.process: asyncio.subprocess.Process | None = None
        self.oom_killed = False
        self.liveness_failed = False
        self.image_ref = ""
        self.env: dict[str, str] = {}

    def log_path(self) -> Path:
        return self.directory / f"{self.restart_count}.log"

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.spec.get("image", ""),
            "imageID": self.image_ref and f"{self.image_ref.split('@')[0]}@sha256:" + "0" * 64,
            "started": self.started,
        }
        if self.process is not None or "terminated" in self.state:
            status["containerID"] = f"containerd://{id(self):064x}"[-77:]
        return status


def memory_limit(container: Container) -> int | None:
    """The container's memory limit in bytes, if it has one."""
    limit = ((container.spec.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(limit)) if limit is not None else None


def pod_env_base(python_bin: str, pod: Obj, address: str) -> dict[str, str]:
    """The machine's environment, the interpreter the fake runs with first on PATH, and what the
    kubelet sets in every container (HOSTNAME, the API server's address)."""
    env = dict(os.environ)
    env["PATH"] = python_bin + os.pathsep + env.get("PATH", "")
    for leaked in ("KUBECONFIG", "VIRTUAL_ENV"):
        env.pop(leaked, None)
    spec = pod["spec"]
    env["HOSTNAME"] = spec.get("hostname") or pod["metadata"]["name"]
    host, _, port = address.rpartition(":")
    env["KUBERNETES_SERVICE_HOST"] = host
    env["KUBERNETES_SERVICE_PORT"] = port
    return env
