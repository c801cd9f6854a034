"""``mlyard models ls | show NAME``: the MLflow model registry."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.table import Table

from mlyard.cli.errors import handle_errors
from mlyard.cli.output import console, emit_json
from mlyard.models.registry import ModelDetails, ModelSummary

models_app = typer.Typer(help="Look at registered models and their versions.", no_args_is_help=True)


@models_app.command("ls")
@handle_errors
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered models with their latest version and aliases."""
    from mlyard.services.models import list_models
    from mlyard.settings import load_settings

    models = list_models(load_settings())
    if as_json:
        emit_json([model.model_dump(mode="json") for model in models])
    elif models:
        console.print(models_table(models))
    else:
        console.print(
            "No registered models yet. A step registers one with mlyard.log_model(model, name)."
        )


@models_app.command("show")
@handle_errors
def show_command(
    name: str = typer.Argument(..., help="Registered model name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a registered model: its versions, where they came from, and its aliases."""
    from mlyard.services.models import show_model
    from mlyard.settings import load_settings

    details = show_model(load_settings(), name)
    if as_json:
        emit_json(details)
        return
    console.print(versions_table(details))
    if details.aliases:
        aliases = ", ".join(f"@{a} → v{v}" for a, v in sorted(details.aliases.items()))
        console.print(f"Aliases: {aliases}")
    console.print(f"Serve one with `mlyard serve models:/{details.name}/VERSION`.")


def models_table(models: list[ModelSummary]) -> Table:
    """The table of ``mlyard models ls``."""
    table = Table(title="Registered models", title_justify="left")
    for column in ("name", "latest", "aliases", "updated", "description"):
        table.add_column(column)
    for model in models:
        table.add_row(
            model.name,
            model.latest_version or "-",
            ", ".join(f"@{a}→v{v}" for a, v in sorted(model.aliases.items())) or "-",
            _when(model.updated_at),
            model.description or "",
        )
    return table


def versions_table(details: ModelDetails) -> Table:
    """The table of ``mlyard models show NAME``."""
    table = Table(title=f"Model {details.name}", title_justify="left")
    for column in ("version", "status", "flavor", "mlyard run", "step", "aliases", "created"):
        table.add_column(column)
    for version in details.versions:
        table.add_row(
            version.version,
            version.status,
            version.flavor or "-",
            version.mlyard_run_id or "-",
            version.step or "-",
            ", ".join(f"@{a}" for a in version.aliases) or "-",
            _when(version.created_at),
        )
    return table


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    app.add_typer(models_app, name="models")
