"""The ``mlyard`` command. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import sys

import typer

from mlyard.cli.errors import set_debug
from mlyard.cli.lifecycle import begin_start_up, exit_process

app = typer.Typer(
    name="mlyard",
    help="Pipelines written once, run on a workstation, SLURM, Kubernetes or Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    set_debug(debug)


def _register_commands() -> None:
    # Imported here so that `mlyard --help` stays fast and optional extras stay optional.
    import importlib

    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"mlyard.cli.{module_name}")
        module.register(app)


#: Command modules, each exposing ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: list[str] = ["run", "runs", "models", "ui", "serve", "consume", "services"]


def main() -> None:
    begin_start_up(sys.argv)
    _register_commands()
    try:
        app()  # ends in SystemExit with the command's exit code
    except SystemExit as exit_:
        exit_process(exit_.code)
