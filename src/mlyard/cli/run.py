"""``mlyard run PATH[:PIPELINE]``: trace, run with a live step tree, summarise, exit 0/1."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import typer
from rich.live import Live

from mlyard.cli.errors import handle_errors
from mlyard.cli.lifecycle import settle_after_start_up
from mlyard.cli.output import console, emit_json, styled
from mlyard.cli.views import run_summary, run_tree
from mlyard.models.runs import RunView


def _interrupt_on_sigterm() -> None:
    # `kill PID` (a CI runner stopping a job) cancels the run like Ctrl-C does.
    def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def finish(view: RunView, as_json: bool) -> None:
    """Print the outcome and exit with 0 only when the run succeeded."""
    if as_json:
        emit_json(view)
    else:
        console.print(run_summary(view))
    if not view.succeeded:
        raise typer.Exit(1)


def run_with_live_view(execute: object, as_json: bool) -> RunView:
    """Call ``execute(observer)`` showing a live tree unless output is JSON or not a terminal."""
    from collections.abc import Callable

    assert callable(execute)
    runner: Callable[..., RunView] = execute
    if as_json or not console.is_terminal:
        return runner(None)
    with Live(console=console, refresh_per_second=8, transient=True) as live:
        return runner(lambda view: live.update(run_tree(view)))


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handle_errors
    def run_command(
        target: str = typer.Argument(..., help="PATH to a pipeline file, optionally :PIPELINE."),
        param: list[str] = typer.Option(
            [], "-p", "--param", help="A pipeline parameter as name=value (repeatable)."
        ),
        backend: str | None = typer.Option(None, "--backend", "-b", help="Backend profile."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again."),
        as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Print the manifests a Kubernetes backend would apply (YAML); run nothing.",
        ),
    ) -> None:
        """Run a pipeline and wait for it; exit code 0 only when it succeeded."""
        from mlyard.backends.registry import warm_up_backend
        from mlyard.orchestration.loading import load_pipeline_file, split_target
        from mlyard.orchestration.parameters import parse_cli_params
        from mlyard.settings import load_settings

        _interrupt_on_sigterm()
        path, name = split_target(target)
        params = parse_cli_params(param)
        settings = load_settings(path.parent if path.parent.exists() else Path.cwd())
        warm_up_backend(backend, settings)  # before the ~0.2 s of imports below
        from mlyard.services.runs import Workspace, execute_run, prepare_run

        loaded = load_pipeline_file(path, name)
        if dry_run:
            from mlyard.services.dry_runs import dry_run_manifests

            print(dry_run_manifests(settings, loaded, params, backend_name=backend), end="")
            return
        workspace = Workspace.open(settings)
        try:
            run_id, chosen = prepare_run(
                workspace, loaded, params, backend_name=backend, use_cache=not no_cache
            )
            if not as_json:
                console.print(
                    styled(
                        ("run", "dim"),
                        " ",
                        (run_id, "bold"),
                        f" of {loaded.pipeline.name} on {chosen.name}",
                    )
                )
            settle_after_start_up()
            view = run_with_live_view(
                lambda observer: execute_run(workspace, run_id, chosen, observer), as_json
            )
        finally:
            workspace.close()
        finish(view, as_json)
