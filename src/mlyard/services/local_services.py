"""Services running on this machine: each ``mlyard serve`` / ``mlyard consume`` in the
foreground records itself in ``MLYARD_HOME/services/running/NAME.json`` while it runs, so
``mlyard services`` can list, show, follow and stop it from another shell.

A JSON file per service under an ``flock`` (as the GPU lease file is), not a table of the
metadata DB: a record is only true on this machine (a pid means nothing elsewhere, and the DB
may be a PostgreSQL shared between machines), it must vanish with its process, and a dead one
is recognised by its pid and the process's start time (pids are reused). The output of the
service (supervisor and replica processes alike) is copied to
``MLYARD_HOME/logs/services/NAME.log`` while it still goes to the terminal.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psutil
from pydantic import BaseModel, Field

from mlyard.backends.local.processes import is_alive, started_since_boot
from mlyard.errors import ConfigError, NotFoundError
from mlyard.models.services import ServiceKind, ServiceReplica, ServiceView
from mlyard.settings import Settings

#: Set in every pod by the kubelet: a process there is the cluster's to manage.
_IN_POD_VARIABLE = "KUBERNETES_SERVICE_HOST"
STOP_WAIT_SECONDS = 40.0  # the server drains for up to 30 s


class LocalServiceRecord(BaseModel):
    """What a running local service says about itself."""

    name: str
    kind: ServiceKind
    model: str
    pid: int
    #: ``processes.started_since_boot(pid)``: with the pid, which process this is.
    pid_started: float
    replicas: int
    gpus: float = 0.0
    address: str
    started_at: datetime
    log: str = Field(description="Where its output is copied.")

    def alive(self) -> bool:
        """Whether the recorded process still runs (and is the same process)."""
        return is_alive(self.pid, self.pid_started)

    def view(self) -> ServiceView:
        """As ``mlyard services`` shows it."""
        children: list[ServiceReplica] = []
        try:
            for child in psutil.Process(self.pid).children():
                children.append(ServiceReplica(name=str(child.pid), ready=True, phase="running"))
        except psutil.Error:
            pass
        return ServiceView(
            name=self.name,
            kind=self.kind,
            backend="local",
            model=self.model,
            replicas=self.replicas,
            ready=self.replicas,
            address=self.address,
            gpus=f"gpus={self.gpus:g}" if self.gpus else "none",
            started_at=self.started_at,
            pid=self.pid,
            log=self.log,
            pods=children,
        )


def registry_directory(settings: Settings) -> Path:
    return settings.home / "services" / "running"


def log_path(settings: Settings, name: str) -> Path:
    return settings.home / "logs" / "services" / f"{name}.log"


@contextmanager
def _locked(settings: Settings) -> Iterator[Path]:
    directory = registry_directory(settings)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _live_records(directory: Path) -> dict[str, LocalServiceRecord]:
    """The records of running services; those of exited processes are removed."""
    records: dict[str, LocalServiceRecord] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            record = LocalServiceRecord.model_validate_json(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if record.alive():
            records[record.name] = record
        else:
            path.unlink(missing_ok=True)
    return records


def default_local_name(model: str, kind: ServiceKind) -> str:
    """``models:/digits@prod`` -> ``digits`` (a consumer: ``digits-consumer``)."""
    from mlyard.services.deployments import default_service_name

    body = model.split(":/", 1)[-1].lstrip("/")
    if model.startswith("runs:/"):
        body = body.split("/", 1)[-1]
    base = body.split("@", 1)[0].split("/", 1)[0] or model
    return default_service_name(base, kind)


def _first_free(base: str, live: dict[str, LocalServiceRecord]) -> str:
    """``base``, else ``base-2``, ``base-3``, …: the first name no running service has."""
    if base not in live:
        return base
    number = 2
    while f"{base}-{number}" in live:
        number += 1
    return f"{base}-{number}"


@contextmanager
def registered_service(
    settings: Settings,
    *,
    name: str | None,
    kind: ServiceKind,
    model: str,
    replicas: int,
    gpus: float,
    address: str,
) -> Iterator[LocalServiceRecord | None]:
    """Record this process as a running service (and copy its output to the service's log)
    until the block ends. Inside a pod nothing is recorded: the cluster manages it there.
    Without ``name`` the model's name is used, numbered when a service has it already (two
    ``mlyard consume`` processes of one model are two services); a ``name`` another service
    has gives ``ConfigError``."""
    if os.environ.get(_IN_POD_VARIABLE):
        yield None
        return
    from mlyard.services.deployments import check_service_name

    chosen = check_service_name(name) if name else None
    with _locked(settings) as directory:
        live = _live_records(directory)
        # Like a container's generated name: another process, another name.
        name = chosen or _first_free(default_local_name(model, kind), live)
        log = log_path(settings, name)
        running = live.get(name)
        if running is not None:
            raise ConfigError(
                f"A {running.kind} service named {name!r} runs already on this machine "
                f"(pid {running.pid}, {running.model}).",
                hint=f"Pass --name with another name, or stop it: mlyard services stop {name}",
            )
        me = psutil.Process()
        record = LocalServiceRecord(
            name=name,
            kind=kind,
            model=model,
            pid=me.pid,
            pid_started=started_since_boot(me.pid),
            replicas=replicas,
            gpus=gpus,
            address=address,
            started_at=datetime.now(UTC),
            log=str(log),
        )
        path = directory / f"{name}.json"
        path.write_text(record.model_dump_json())
    try:
        with _output_copied_to(log):
            yield record
    finally:
        with _locked(settings):
            path.unlink(missing_ok=True)


@contextmanager
def _output_copied_to(log: Path) -> Iterator[None]:
    """File descriptors 1 and 2 (inherited by replica processes) go through a pipe whose
    reader writes each chunk to the terminal's streams and to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    log_file = log.open("ab", buffering=0)  # closed by the copier

    def copy() -> None:
        with log_file, os.fdopen(read_end, "rb", buffering=0) as reader:
            while chunk := reader.read(65536):
                log_file.write(chunk)
                os.write(saved[1], chunk)

    copier = threading.Thread(target=copy, name="service-log", daemon=True)
    copier.start()
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)  # the pipe's last writers in this process are gone
        copier.join(timeout=2.0)
        for descriptor in saved:
            os.close(descriptor)


def list_local_services(settings: Settings, name: str | None = None) -> list[ServiceView]:
    """The services running on this machine (or the one named)."""
    with _locked(settings) as directory:
        records = _live_records(directory)
    if name is not None:
        return [_find(records, name).view()]
    return [record.view() for record in records.values()]


def _find(records: dict[str, LocalServiceRecord], name: str) -> LocalServiceRecord:
    if name not in records:
        raise NotFoundError(
            f"No service named {name!r} runs on this machine.",
            hint=f"Running here: {', '.join(sorted(records)) or 'none'} (`mlyard services "
            "ls`); a service on a cluster needs --backend NAME.",
        )
    return records[name]


def stop_local_service(settings: Settings, name: str, *, wait: float = STOP_WAIT_SECONDS) -> bool:
    """SIGTERM the service (it drains, then exits); whether it exited within ``wait``."""
    with _locked(settings) as directory:
        record = _find(_live_records(directory), name)
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not record.alive():
            return True
        time.sleep(0.1)
    return False


def refuse_local_scale(name: str) -> None:
    """A local service's replicas are fixed when it starts: say how to change them."""
    raise ConfigError(
        f"The replicas of the local service {name!r} cannot change while it runs: they share "
        "one port that their supervisor bound for exactly that many processes (each with its "
        "own GPU lease).",
        hint=f"Stop it (mlyard services stop {name}) and start it again with --replicas N.",
    )


def local_service_logs(settings: Settings, name: str, *, follow: bool) -> Iterator[str]:
    """The lines of the service's log; with ``follow``, as they come, until it exits."""
    with _locked(settings) as directory:
        record = _find(_live_records(directory), name)
    with Path(record.log).open(encoding="utf-8", errors="replace") as log:
        yield from _lines(log, record, follow=follow)


def _lines(log: IO[str], record: LocalServiceRecord, *, follow: bool) -> Iterator[str]:
    pending = ""
    while True:
        chunk = log.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from complete
            continue
        if not follow or not record.alive():
            break
        time.sleep(0.2)
    if pending:
        yield pending
