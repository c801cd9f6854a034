"""``mlyard serve MODEL``: serve a registered model over the Open Inference Protocol v2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlyard.cli.errors import handle_errors
from mlyard.cli.output import err_console

if TYPE_CHECKING:
    from mlyard.consumers.options import ConsumerConfig
    from mlyard.services.deployments import ServerOptions
    from mlyard.settings import Settings

SERVE_HELP = (
    "Serve a registered model over HTTP: the Open Inference Protocol v2 (KServe/Triton "
    "clients, JSON or binary tensors), a plain JSON POST /predict, and Prometheus /metrics; "
    "with --grpc-port, the v2 gRPC service too.\n\n"
    "MODEL is models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME (its latest version) or "
    "runs:/RUN_ID/PATH.\n\n"
    "Concurrent requests are batched into one model call (--max-batch-size, "
    "--max-queue-delay-ms). SIGTERM drains: in-flight requests finish, then the server "
    "exits 0.\n\n"
    "Security: the server binds 127.0.0.1 unless --host says otherwise; any other address "
    "needs a token (--token-file or MLYARD_SERVE_TOKEN) that clients send as "
    "'Authorization: Bearer TOKEN' (over gRPC: the metadata 'authorization'). Models stored "
    "as pickles (PyTorch models, sklearn models "
    "logged with pickle or cloudpickle) run code from the file when they are loaded: the "
    "server loads one only because you named it here, so serve only models you trust."
)


@handle_errors
def serve_command(
    model: Annotated[
        str,
        typer.Argument(
            help="models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME or runs:/ID/PATH."
        ),
    ],
    host: Annotated[
        str,
        typer.Option(help="Address to bind; any address other than loopback requires a token."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Also serve the v2 gRPC service (inference.GRPCInferenceService) on this port, "
            "on the same address and with the same token.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "--replicas",
            min=1,
            help="Replica processes sharing the port, each with its own model copy.",
        ),
    ] = 1,
    gpus: Annotated[
        float, typer.Option(min=0.0, help="GPUs per replica, e.g. 1 or 0.5; 0 runs on CPU.")
    ] = 0.0,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Most rows per model call.")] = 64,
    max_queue_delay_ms: Annotated[
        float,
        typer.Option(min=0.0, help="How long a request waits for others to batch with."),
    ] = 2.0,
    max_request_bytes: Annotated[
        int, typer.Option(min=1, help="Larger request bodies get 413.")
    ] = 16 * 1024 * 1024,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token (or set MLYARD_SERVE_TOKEN)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn and mlyard log level.")] = "warning",
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help="Run it as a service on this backend profile (kubernetes: a Deployment of "
            "--replicas pods and a Service); default: here, in the foreground.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help=(
                "The service's name (DNS-1123); default: from the model's name, numbered "
                "(-2, -3) where one runs already on this machine."
            )
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="With a kubernetes --backend: print the manifests (YAML); apply nothing.",
        ),
    ] = False,
) -> None:
    from mlyard.errors import ConfigError
    from mlyard.services.models import resolve_model_uri
    from mlyard.serving.auth import resolve_token
    from mlyard.serving.replicas import ReplicaSpec, serve
    from mlyard.settings import load_settings

    settings = load_settings()
    if runs_on_cluster(settings, backend, dry_run):
        from mlyard.services.deployments import ServerOptions

        options = ServerOptions(
            model=model,
            replicas=workers,
            gpus=gpus,
            port=port or 8080,
            grpc_port=grpc_port,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            max_request_bytes=max_request_bytes,
            log_level=log_level.lower(),
            # Any token given is the service's; without one a random one is made.
            token=resolve_token("127.0.0.1", token_file, dict(os.environ)),
        )
        assert backend is not None
        deploy_on_cluster(settings, backend, name, dry_run, server=options)
        return
    token = resolve_token(host, token_file, dict(os.environ))
    resolved = resolve_model_uri(settings, model)
    tracking_uri = settings.tracking_uri
    if tracking_uri is None:  # resolve_model_uri already refused this; keeps the type exact
        raise ConfigError("Tracking is disabled, so there is no model registry to serve from.")
    spec = ReplicaSpec(
        model_name=resolved.name,
        model_version=resolved.version,
        model_uri=resolved.uri,
        model_flavor=resolved.flavor,
        tracking_uri=tracking_uri,
        registry_uri=settings.registry_uri,
        host=host,
        port=port,
        grpc_port=grpc_port,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        max_request_bytes=max_request_bytes,
        token=token,
        log_level=log_level.lower(),
    )
    shown_host = f"[{host}]" if ":" in host else host
    from mlyard.services.local_services import registered_service

    with registered_service(
        settings,
        name=name,
        kind="server",
        model=resolved.uri,
        replicas=workers,
        gpus=gpus,
        address=f"http://{shown_host}:{port}",
    ):
        err_console.print(
            f"Serving {resolved.name} version {resolved.version} ({resolved.flavor}) from {model} "
            f"on http://{shown_host}:{port}"
            + (f" and gRPC {shown_host}:{grpc_port}" if grpc_port is not None else "")
            + f" with {workers} replica(s)"
            + (f", {gpus} GPU each" if gpus else " on CPU"),
            soft_wrap=True,
        )
        code = serve(spec, workers=workers, gpus=gpus)
    raise typer.Exit(code)


def runs_on_cluster(settings: Settings, backend: str | None, dry_run: bool) -> bool:
    """Whether the command deploys a service to ``backend`` instead of running here."""
    from mlyard.errors import ConfigError

    if backend is None or settings.backend_profile(backend).type == "local":
        if dry_run:
            raise ConfigError(
                "--dry-run prints the manifests of a service on a Kubernetes backend; this "
                "command would run here.",
                hint="Pass --backend with a profile of type 'kubernetes', or drop --dry-run.",
            )
        return False
    return True


def deploy_on_cluster(
    settings: Settings,
    backend: str,
    name: str | None,
    dry_run: bool,
    *,
    server: ServerOptions | None = None,
    consumer: ConsumerConfig | None = None,
) -> None:
    """Apply (or with ``dry_run`` print) the service; report what was done."""
    from mlyard.services.deployments import (
        consumer_spec,
        deploy_service,
        render_service,
        server_spec,
    )

    if server is not None:
        spec = server_spec(settings, server, name)
    else:
        assert consumer is not None
        spec = consumer_spec(settings, consumer, name)
    if dry_run:
        print(render_service(settings, backend, spec), end="")
        return
    deployed = deploy_service(settings, backend, spec, token=server.token if server else None)
    verb = "Created" if deployed.created else "Updated"
    err_console.print(
        f"{verb} {spec.kind} service {deployed.name} ({deployed.model}, {spec.replicas} "
        f"replica(s)) on backend {backend}; see `mlyard services show {deployed.name} "
        f"--backend {backend}`.",
        soft_wrap=True,
    )
    if deployed.new_token is not None:
        # Shown this once; clients send it as 'Authorization: Bearer TOKEN'.
        err_console.print(
            f"Its token (written to {deployed.token_file}, shown only now): {deployed.new_token}",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add ``mlyard serve`` to the CLI."""
    app.command("serve", help=SERVE_HELP)(serve_command)
