"""Cluster DNS without a DNS server: each container gets a private ``/etc/hosts`` (bind-mounted
in a mount namespace of its own, with the pod's hostname in a UTS namespace) that lists the
Services and the pods behind headless Services the way CoreDNS would answer for them, including
the short names the pod's search path would complete. The kubelet rewrites the files in place
when pods or Services change, so peers that start later resolve too."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Obj, Store

_POD, _SERVICE = BY_KIND["Pod"], BY_KIND["Service"]
DOMAIN = "cluster.local"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Runs the container's command with its hosts file, hostname and (unless $2 is empty) its
#: service-account token directory: $0 = hosts file, $1 = hostname, $2 = token directory.
_WRAPPER = (
    'mount --bind "$0" /etc/hosts && hostname "$1" && '
    f'{{ [ -z "$2" ] || {{ mkdir -p {SERVICE_ACCOUNT_DIR} && '
    f'mount --bind "$2" {SERVICE_ACCOUNT_DIR}; }}; }} && shift 2 && exec "$@"'
)


@cache
def namespaces_available() -> bool:
    """Whether this machine lets the kubelet give containers mount and UTS namespaces."""
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "--mount", "--uts", "true"], capture_output=True, check=False)
    return done.returncode == 0


def wrap(argv: list[str], hosts: Path, hostname: str, token_dir: Path | None) -> list[str]:
    """``argv`` run inside the pod's namespaces (unchanged where they are not available)."""
    if not namespaces_available():
        return argv
    return [
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "sh",
        "-c",
        _WRAPPER,
        str(hosts),
        hostname,
        str(token_dir or ""),
        *argv,
    ]


def _names(fqdn_parts: list[str], namespace: str, own_namespace: str) -> list[str]:
    """The FQDN and what the search path ``<ns>.svc.cluster.local svc.cluster.local
    cluster.local`` completes to it."""
    base = ".".join(fqdn_parts)
    names = [f"{base}.{namespace}.svc.{DOMAIN}", f"{base}.{namespace}.svc", f"{base}.{namespace}"]
    if namespace == own_namespace:
        names.append(base)
    return names


def hosts_file(store: Store, pod: Obj, pod_ip: str) -> str:
    """The /etc/hosts the kubelet gives ``pod``: the machine's, the pod's own names, and the
    cluster's Services and headless-Service pods."""
    meta, spec = pod["metadata"], pod["spec"]
    own = meta["namespace"]
    hostname = spec.get("hostname") or meta["name"]
    lines = [Path("/etc/hosts").read_text().rstrip("\n"), "# kubefake cluster DNS"]
    own_names = [hostname]
    if spec.get("subdomain"):
        own_names = _names([hostname, spec["subdomain"]], own, own) + own_names
    lines.append(f"{pod_ip}\t{' '.join(own_names)}")
    services = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s for s in store.peek(_SERVICE)
    }
    for (namespace, name), service in sorted(services.items()):
        ip = service.get("spec", {}).get("clusterIP")
        if ip and ip != "None":
            lines.append(f"{ip}\t{' '.join(_names([name], namespace, own))}")
    for other in store.peek(_POD):
        ometa, ospec = other["metadata"], other.get("spec", {})
        ip = other.get("status", {}).get("podIP")
        subdomain = ospec.get("subdomain")
        if not ip or not subdomain or (ometa["namespace"], subdomain) not in services:
            continue
        if ometa["uid"] == meta["uid"]:
            continue
        names = _names([ospec.get("hostname") or ometa["name"], subdomain], ometa["namespace"], own)
        lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def dns_key(store: Store) -> frozenset[tuple[str, ...]]:
    """What the hosts files depend on: they are rewritten only when it changes."""
    key: set[tuple[str, ...]] = {
        (
            "svc",
            s["metadata"]["namespace"],
            s["metadata"]["name"],
            str(s.get("spec", {}).get("clusterIP")),
        )
        for s in store.peek(_SERVICE)
    }
    for pod in store.peek(_POD):
        spec = pod.get("spec", {})
        ip = pod.get("status", {}).get("podIP")
        if spec.get("subdomain") and ip:
            key.add(
                (
                    "pod",
                    pod["metadata"]["namespace"],
                    spec.get("hostname") or "",
                    spec["subdomain"],
                    ip,
                )
            )
    return frozenset(key)
