"""`mlyard serve` as a real process for the serving integration tests: start, wait, stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# Starts `mlyard serve` whether or not the serve command is registered in the CLI yet.
LAUNCHER = (
    "from mlyard.cli import main, serve\n"
    "main._register_commands()\n"
    "if 'serve' not in main.COMMAND_MODULES: serve.register(main.app)\n"
    "main.app()\n"
)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    grpc_address: str | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    directory: Path, name: str, args: list[str], env: dict[str, str], *, grpc: bool = False
) -> Server:
    """Start `mlyard serve ARGS` on free loopback ports (HTTP, and gRPC when asked), with a home
    of its own under ``directory``."""
    port = free_port()
    extra = ["--port", str(port)]
    grpc_address = None
    if grpc:
        grpc_port = free_port()
        extra += ["--grpc-port", str(grpc_port)]
        grpc_address = f"127.0.0.1:{grpc_port}"
    log = directory / f"{name}.log"
    # A home per server: a running server holds its service name (the model's) in its home.
    home = directory / f"home-{name}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "serve", *args, *extra],
            env={**env, "MLYARD_HOME": str(home)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Server(process, f"http://127.0.0.1:{port}", log, grpc_address)


def wait_ready(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"server exited early:\n{server.output()}"
        try:
            response = httpx.get(f"{server.url}/v2/health/ready", timeout=2)
        except httpx.HTTPError:
            pass
        else:
            if response.status_code == 200:
                return
            assert "failed" not in response.text, f"{response.text}\n{server.output()}"
        time.sleep(0.25)
    raise AssertionError(f"server not ready in {timeout} s:\n{server.output()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
