"""``python -m tests.kubefake --state-dir DIR``: serve a fake cluster on 127.0.0.1 and write
``DIR/kubeconfig`` (contexts ``fake`` and ``fake-restricted``) once it answers."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import sys
from pathlib import Path

import uvicorn
import yaml

from tests.kubefake.api import build_app
from tests.kubefake.cluster import Cluster, bind_socket
from tests.kubefake.tls import write_certificates


def kubeconfig(server: str, ca: Path, admin_token: str, restricted_token: str) -> dict[str, object]:
    """A kubeconfig as kubeadm writes one: one cluster (its CA inline), two users, two
    contexts."""
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubefake",
                "cluster": {"server": server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [
            {"name": "fake-admin", "user": {"token": admin_token}},
            {"name": "fake-restricted", "user": {"token": restricted_token}},
        ],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "kubefake", "user": "fake-admin", "namespace": "default"},
            },
            {
                "name": "fake-restricted",
                "context": {
                    "cluster": "kubefake",
                    "user": "fake-restricted",
                    "namespace": "mlyard",
                },
            },
        ],
        "current-context": "fake",
        "preferences": {},
    }


async def serve(state_dir: Path, history: int, backoff: float) -> None:
    cluster = Cluster(state_dir, str(Path(sys.executable).parent), history, backoff)
    cluster.bootstrap()
    sock = bind_socket()
    host, port = sock.getsockname()[:2]
    cluster.address = f"{host}:{port}"
    ca, cert, key = write_certificates(state_dir)
    config = uvicorn.Config(
        build_app(cluster),
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    tasks = cluster.tasks()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = loop.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    config_path = state_dir / "kubeconfig"
    temporary = config_path.with_suffix(".tmp")
    temporary.write_text(
        yaml.safe_dump(
            kubeconfig(
                f"https://{cluster.address}", ca, cluster.admin_token, cluster.restricted_token
            )
        )
    )
    temporary.chmod(0o600)
    temporary.replace(config_path)
    print(f"kubefake: serving https://{cluster.address}", flush=True)
    await stop.wait()
    await cluster.kubelet.shutdown()
    server.should_exit = True
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kubefake", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--watch-history",
        type=int,
        default=int(os.environ.get("KUBE_FAKE_WATCH_HISTORY", "500")),
        help="changes kept per resource type for watches (older: 410 Expired)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=float(os.environ.get("KUBE_FAKE_BACKOFF_SECONDS", "1")),
        help="first restart / pull back-off in seconds (the real kubelet: 10)",
    )
    args = parser.parse_args()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.state_dir.resolve(), args.watch_history, args.backoff))


if __name__ == "__main__":
    main()
