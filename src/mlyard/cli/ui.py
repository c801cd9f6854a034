"""``mlyard ui``: the MLflow UI on the tracking store, on 127.0.0.1."""

from __future__ import annotations

import typer

from mlyard.cli.errors import handle_errors
from mlyard.cli.output import console
from mlyard.services.mlflow_ui import DEFAULT_UI_PORT


@handle_errors
def ui_command(
    port: int = typer.Option(
        DEFAULT_UI_PORT, "--port", "-p", min=1, max=65535, help="Port on 127.0.0.1."
    ),
) -> None:
    """Open the MLflow UI on the tracking store (loopback only; Ctrl-C stops it)."""
    from mlyard.services.mlflow_ui import plan_ui, run_ui
    from mlyard.settings import load_settings

    plan = plan_ui(load_settings(), port=port)
    if plan.command is None:
        console.print(f"The MLflow UI of the tracking server is at {plan.url}")
        return
    console.print("Starting the MLflow UI (the first start migrates the store) …")
    try:
        exit_code = run_ui(
            plan,
            on_ready=lambda url: console.print(f"MLflow UI at {url} — press Ctrl-C to stop it."),
        )
    except KeyboardInterrupt:
        console.print("Stopped the MLflow UI.")
        return
    if exit_code != 0:
        raise typer.Exit(exit_code)


def register(app: typer.Typer) -> None:
    """Add the ``ui`` command to ``app``."""
    app.command("ui")(ui_command)
