"""``mlyard services ls | show | logs | scale | stop``: model servers and event consumers,
on this machine (those running in the foreground of another shell) or, with ``--backend``, on
a cluster."""

from __future__ import annotations

import typer
from rich.table import Table

from mlyard.cli.errors import handle_errors
from mlyard.cli.output import console, emit_json, err_console
from mlyard.models.services import ServiceView
from mlyard.settings import Settings

services_app = typer.Typer(
    help="Model servers and event consumers: here, or on a cluster with --backend.",
    no_args_is_help=True,
)

BACKEND_HELP = "The backend profile the service runs on; default: this machine."


def _settings_and_cluster(backend: str | None) -> tuple[Settings, str | None]:
    """The settings, and the backend name when it is a cluster (``None``: this machine)."""
    from mlyard.settings import load_settings

    settings = load_settings()
    if backend is None or settings.backend_profile(backend).type == "local":
        return settings, None
    return settings, backend


def _services(backend: str | None, name: str | None = None) -> list[ServiceView]:
    settings, cluster = _settings_and_cluster(backend)
    if cluster is None:
        from mlyard.services.local_services import list_local_services

        return list_local_services(settings, name)
    from mlyard.services.deployments import list_cluster_services

    return list_cluster_services(settings, cluster, name)


def _table(services: list[ServiceView]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "KIND", "BACKEND", "READY", "MODEL", "GPUS", "ADDRESS"):
        table.add_column(column)
    for service in services:
        table.add_row(
            service.name,
            service.kind,
            service.backend,
            f"{service.ready}/{service.replicas}",
            service.model,
            service.gpus,
            service.address or "-",
        )
    return table


@services_app.command("ls")
@handle_errors
def list_command(
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the services as JSON."),
) -> None:
    """List the running services."""
    services = _services(backend)
    if as_json:
        emit_json([s.model_dump(mode="json") for s in services])
    elif services:
        console.print(_table(services))
    else:
        where = f"on backend {backend}" if backend else "on this machine"
        console.print(f"No services run {where}. Start one with `mlyard serve MODEL`.")


@services_app.command("show")
@handle_errors
def show_command(
    name: str = typer.Argument(..., help="The service's name (see `mlyard services ls`)."),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the service as JSON."),
) -> None:
    """Show one service and its replicas."""
    service = _services(backend, name)[0]
    if as_json:
        emit_json(service)
        return
    lines = [
        f"{service.kind} {service.name} on {service.backend}",
        f"  model:    {service.model}",
        f"  replicas: {service.ready}/{service.replicas} ready",
        f"  GPUs:     {service.gpus} per replica",
        f"  address:  {service.address or '-'}",
    ]
    if service.image:
        lines.append(f"  image:    {service.image}")
    if service.pid is not None:
        lines.append(f"  pid:      {service.pid}")
    if service.log:
        lines.append(f"  log:      {service.log}")
    if service.started_at:
        lines.append(f"  started:  {service.started_at.isoformat(timespec='seconds')}")
    for pod in service.pods:
        state = "ready" if pod.ready else (pod.phase or "not ready")
        restarts = f", {pod.restarts} restart(s)" if pod.restarts else ""
        lines.append(f"  - {pod.name} {pod.address or ''} {state}{restarts}".rstrip())
    console.print("\n".join(lines), soft_wrap=True)


@services_app.command("logs")
@handle_errors
def logs_command(
    name: str = typer.Argument(..., help="The service's name."),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """Print the service's output (on a cluster, every pod's, each line led by its pod)."""
    settings, cluster = _settings_and_cluster(backend)
    if cluster is None:
        from mlyard.services.local_services import local_service_logs

        lines = local_service_logs(settings, name, follow=follow)
    else:
        from mlyard.services.deployments import cluster_service_logs

        lines = cluster_service_logs(settings, cluster, name, follow=follow)
    try:
        for line in lines:
            print(line, flush=follow)
    except KeyboardInterrupt:
        pass


@services_app.command("scale")
@handle_errors
def scale_command(
    name: str = typer.Argument(..., help="The service's name."),
    replicas: int = typer.Argument(..., min=0, help="How many replicas it should run."),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
) -> None:
    """Change how many replicas a cluster service runs."""
    settings, cluster = _settings_and_cluster(backend)
    if cluster is None:
        from mlyard.services.local_services import list_local_services, refuse_local_scale

        list_local_services(settings, name)  # an unknown name is reported as such
        refuse_local_scale(name)
        return
    from mlyard.services.deployments import scale_cluster_service

    scale_cluster_service(settings, cluster, name, replicas)
    err_console.print(f"Service {name} on {cluster} scaled to {replicas} replica(s).")


@services_app.command("stop")
@handle_errors
def stop_command(
    name: str = typer.Argument(..., help="The service's name."),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print what was stopped as JSON."),
) -> None:
    """Stop the service: locally SIGTERM (it drains, then exits); on a cluster, delete its
    Deployment, Service and Secret."""
    settings, cluster = _settings_and_cluster(backend)
    if cluster is None:
        from mlyard.services.local_services import stop_local_service

        exited = stop_local_service(settings, name)
        outcome = {"name": name, "backend": "local", "exited": exited, "deleted": []}
    else:
        from mlyard.services.deployments import stop_cluster_service

        deleted = stop_cluster_service(settings, cluster, name)
        outcome = {"name": name, "backend": cluster, "exited": True, "deleted": deleted}
    if as_json:
        emit_json(outcome)
    elif cluster is None:
        err_console.print(
            f"Service {name} stopped." if exited else f"Service {name} is still draining."
        )
    else:
        err_console.print(f"Service {name} on {cluster} stopped: deleted {', '.join(deleted)}.")


def register(app: typer.Typer) -> None:
    """Add ``mlyard services`` to the CLI."""
    app.add_typer(services_app, name="services")
