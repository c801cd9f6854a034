"""``mlyard serve MODEL``: serve a registered model over the Open Inference Protocol v2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mlyard.cli.errors import handle_errors
from mlyard.cli.output import err_console

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
) -> None:
    from mlyard.errors import ConfigError
    from mlyard.services.models import resolve_model_uri
    from mlyard.serving.auth import resolve_token
    from mlyard.serving.replicas import ReplicaSpec, serve
    from mlyard.settings import load_settings

    token = resolve_token(host, token_file, dict(os.environ))
    settings = load_settings()
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
    err_console.print(
        f"Serving {resolved.name} version {resolved.version} ({resolved.flavor}) from {model} "
        f"on http://{shown_host}:{port}"
        + (f" and gRPC {shown_host}:{grpc_port}" if grpc_port is not None else "")
        + f" with {workers} replica(s)"
        + (f", {gpus} GPU each" if gpus else " on CPU"),
        soft_wrap=True,
    )
    raise typer.Exit(serve(spec, workers=workers, gpus=gpus))


def register(app: typer.Typer) -> None:
    """Add ``mlyard serve`` to the CLI."""
    app.command("serve", help=SERVE_HELP)(serve_command)
