"""Running commands and moving files on the cluster: over one persistent SSH connection, or locally.

``SshShell`` keeps one asyncssh connection per cluster on a private event-loop thread, so the
synchronous backend API can use it; a dropped connection is re-opened with backoff on the next
command. Host keys are checked strictly: an unknown or changed key is refused with the command
that trusts the host. Keys and passphrases are never logged or stored: asyncssh reads the key
file itself. ``LocalShell`` is the same interface for mlyard running on the login node.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mlyard.backends.slurm.profile import SlurmProfile
from mlyard.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")

#: Seconds to wait before each re-connection attempt after a dropped connection.
RECONNECT_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def output(self) -> str:
        """stderr then stdout, stripped: what to show people when the command failed."""
        return "\n".join(part.strip() for part in (self.stderr, self.stdout) if part.strip())


class ClusterShell(Protocol):
    """Commands and files on the cluster's login node."""

    def run(self, command: str, *, stdin: str | None = None) -> CommandResult:
        """Run a shell command; blocks until it ends. Raises ``BackendError`` when unreachable."""

    def write_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (temp file + rename); parents must exist."""

    def read_file(self, path: str) -> bytes | None:
        """The bytes at ``path``, or ``None`` when it does not exist."""

    def close(self) -> None:
        """Release the connection."""


class LocalShell:
    """The login node is this machine: commands run in a local login shell."""

    def run(self, command: str, *, stdin: str | None = None) -> CommandResult:
        done = subprocess.run(
            ["bash", "-c", command], input=stdin, capture_output=True, text=True, check=False
        )
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def write_file(self, path: str, data: bytes) -> None:
        target = Path(path).expanduser()
        staging = target.with_name(f".{target.name}.partial")
        staging.write_bytes(data)
        staging.replace(target)

    def read_file(self, path: str) -> bytes | None:
        try:
            return Path(path).expanduser().read_bytes()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        pass


def trust_command(profile: SlurmProfile) -> str:
    """The command that adds the login node's host key to the known_hosts file mlyard checks."""
    known_hosts = profile.known_hosts or Path("~/.ssh/known_hosts")
    port = f"-p {profile.port} " if profile.port != 22 else ""
    return f"ssh-keyscan {port}{profile.host} >> {known_hosts}"


class SshShell:
    """One persistent SSH connection to the login node, shared by every command."""

    def __init__(self, backend_name: str, profile: SlurmProfile) -> None:
        self._name = backend_name
        self._profile = profile
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"mlyard-ssh-{backend_name}", daemon=True
        )
        self._thread.start()
        self._connection: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        #: How many times a connection was opened; tests and benchmarks read it.
        self.connections_opened = 0
        self.commands_run = 0

    # --- the ClusterShell interface -------------------------------------------------------

    def run(self, command: str, *, stdin: str | None = None) -> CommandResult:
        self.commands_run += 1
        return self._call(self._with_retry(lambda conn: self._run(conn, command, stdin)))

    def write_file(self, path: str, data: bytes) -> None:
        self._call(self._with_retry(lambda conn: self._write(conn, path, data)))

    def read_file(self, path: str) -> bytes | None:
        return self._call(self._with_retry(lambda conn: self._read(conn, path)))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._connection is not None:
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # --- on the event-loop thread -----------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise BackendError(f"The SSH connection of backend {self._name!r} was closed.")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _with_retry(
        self, action: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]
    ) -> T:
        """Run ``action(connection)``; when the connection dropped, reconnect with backoff."""
        import asyncssh

        last_error: Exception | None = None
        for delay in (0.0, *RECONNECT_BACKOFF):
            if delay:
                await asyncio.sleep(delay)
            connection = await self._connect()
            try:
                return await action(connection)
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
                last_error = exc
                await self._drop(connection)
            except asyncssh.ChannelOpenError as exc:
                last_error = exc
                await self._drop(connection)
        raise BackendError(
            f"Lost the SSH connection to {self._profile.host} and could not restore it: "
            f"{last_error}",
            hint="Check that the login node is up and reachable, then retry.",
        )

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if self._sftp is not None:
            self._sftp.exit()
            await self._sftp.wait_closed()
            self._sftp = None
        if connection is not None:
            connection.close()
            await connection.wait_closed()

    async def _drop(self, connection: asyncssh.SSHClientConnection) -> None:
        async with self._lock:
            if self._connection is connection:
                connection.abort()
                self._connection = None
                self._sftp = None

    async def _connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            self._connection = await self._open_connection()
            self._sftp = None
            self.connections_opened += 1
            return self._connection

    async def _open_connection(self) -> asyncssh.SSHClientConnection:
        import asyncssh

        profile = self._profile
        target = f"{profile.user + '@' if profile.user else ''}{profile.host}:{profile.port}"
        options: dict[str, Any] = {
            "host": profile.host,
            "port": profile.port,
            "known_hosts": self._known_hosts(),
            "connect_timeout": profile.connect_timeout,
            "keepalive_interval": 10,
            "keepalive_count_max": 3,
        }
        if profile.user:
            options["username"] = profile.user
        if profile.identity_file is not None:
            options["client_keys"] = [str(profile.identity_file.expanduser())]
        if not profile.use_agent:
            options["agent_path"] = None
        if profile.jump_host:
            options["tunnel"] = profile.jump_host
        try:
            return await asyncssh.connect(**options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise BackendError(
                f"The host key of {target} is not trusted (unknown or changed): {exc.reason}.",
                hint="If this is the right host, trust it with:\n  "
                f"{trust_command(profile)}\nIf its key changed unexpectedly, ask the site "
                "administrators before trusting the new one.",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise BackendError(
                f"SSH authentication to {target} was refused.",
                hint="Check user and identity_file in the backend profile (or load the key "
                "into ssh-agent), and that the public key is in the cluster's authorized_keys.",
            ) from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise BackendError(
                f"Cannot reach the login node {target}: {exc}.",
                hint="Check host and port in the backend profile and your network (VPN?).",
            ) from exc

    def _known_hosts(self) -> str | tuple[()]:
        path = (self._profile.known_hosts or Path("~/.ssh/known_hosts")).expanduser()
        if self._profile.known_hosts is not None and not path.is_file():
            raise ConfigError(
                f"known_hosts file {path} of backend {self._name!r} does not exist.",
                hint=f"Create it with: {trust_command(self._profile)}",
            )
        # An empty tuple trusts no key at all: unknown hosts are refused, never accepted.
        return str(path) if path.is_file() else ()

    async def _run(
        self, connection: asyncssh.SSHClientConnection, command: str, stdin: str | None
    ) -> CommandResult:
        result = await connection.run(command, input=stdin, check=False)
        return CommandResult(
            exit_status=result.exit_status if result.exit_status is not None else 255,
            stdout=_text(result.stdout),
            stderr=_text(result.stderr),
        )

    async def _sftp_client(self, connection: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await connection.start_sftp_client()
        return self._sftp

    async def _write(
        self, connection: asyncssh.SSHClientConnection, path: str, data: bytes
    ) -> None:
        sftp = await self._sftp_client(connection)
        staging = f"{path}.partial"
        async with sftp.open(staging, "wb") as remote:
            await remote.write(data)
        await sftp.posix_rename(staging, path)

    async def _read(self, connection: asyncssh.SSHClientConnection, path: str) -> bytes | None:
        import asyncssh

        sftp = await self._sftp_client(connection)
        try:
            async with sftp.open(path, "rb") as remote:
                data = await remote.read()
        except asyncssh.SFTPNoSuchFile:
            return None
        return data if isinstance(data, bytes) else data.encode()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def open_shell(backend_name: str, profile: SlurmProfile) -> ClusterShell:
    """The shell of a profile: local on the login node, SSH otherwise."""
    if profile.login_node_local:
        return LocalShell()
    return SshShell(backend_name, profile)


def quote(value: str) -> str:
    """Shell-quote, keeping a leading ``~/`` expandable by the remote shell."""
    if value.startswith("~/"):
        return '"$HOME"/' + shlex.quote(value[2:])
    return shlex.quote(value)
