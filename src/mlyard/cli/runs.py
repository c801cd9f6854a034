"""``mlyard runs ls | show | logs | cancel | resume``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mlyard.cli.errors import handle_errors
from mlyard.cli.lifecycle import settle_after_start_up
from mlyard.cli.output import console, emit_json
from mlyard.cli.run import _interrupt_on_sigterm, finish, run_with_live_view
from mlyard.cli.views import run_summary, runs_table

if TYPE_CHECKING:
    from mlyard.services.runs import Workspace

runs_app = typer.Typer(help="Look at, cancel and resume runs.", no_args_is_help=True)


def _workspace() -> Workspace:
    from mlyard.services.runs import Workspace
    from mlyard.settings import load_settings

    return Workspace.open(load_settings())


@runs_app.command("ls")
@handle_errors
def list_command(
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs, newest first."),
    pipeline: str | None = typer.Option(None, "--pipeline", help="Only runs of this pipeline."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List recent runs."""
    from mlyard.services.runs import list_runs

    workspace = _workspace()
    try:
        runs = list_runs(workspace, limit=limit, pipeline=pipeline)
    finally:
        workspace.close()
    if as_json:
        emit_json(
            [
                {
                    "id": r.id,
                    "pipeline": r.pipeline_name,
                    "state": r.state,
                    "backend": r.backend,
                    "created_at": r.created_at,
                    "finished_at": r.finished_at,
                }
                for r in runs
            ]
        )
    elif runs:
        console.print(runs_table(runs))
    else:
        console.print("No runs yet. Start one with `mlyard run PIPELINE_FILE`.")


@runs_app.command("show")
@handle_errors
def show_command(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    scripts: bool = typer.Option(False, "--scripts", help="Show generated job scripts."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a run: steps, metrics, usage, artifacts, MLflow."""
    from mlyard.services.runs import show_run

    workspace = _workspace()
    try:
        view = show_run(workspace, run_id)
    finally:
        workspace.close()
    if as_json:
        emit_json(view)
        return
    console.print(run_summary(view))
    for step in view.steps:
        if step.submit_script and scripts:
            console.rule(f"job script of {step.name}")
            console.print(step.submit_script, markup=False, highlight=False)


@runs_app.command("logs")
@handle_errors
def logs_command(
    run_id: str = typer.Argument(...),
    step: str | None = typer.Argument(None, help="Step name (needed when there are several)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends."),
    as_json: bool = typer.Option(False, "--json", help="Print {'lines': [...]} at the end."),
) -> None:
    """Print a step's output."""
    from mlyard.services.runs import step_logs

    workspace = _workspace()
    try:
        lines = step_logs(workspace, run_id, step, follow=follow)
        if as_json:
            emit_json({"lines": list(lines)})
        else:
            for line in lines:
                console.print(line, markup=False, highlight=False, soft_wrap=True)
    finally:
        workspace.close()


@runs_app.command("cancel")
@handle_errors
def cancel_command(
    run_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Cancel a run and stop its running steps."""
    from mlyard.services.runs import cancel_run

    workspace = _workspace()
    try:
        view = cancel_run(workspace, run_id)
    finally:
        workspace.close()
    if as_json:
        emit_json(view)
    else:
        console.print(f"Run {view.id} is {view.state.value}.")


@runs_app.command("resume")
@handle_errors
def resume_command(
    run_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Finish a failed or interrupted run; steps that succeeded are not run again."""
    from mlyard.services.runs import resume_run

    _interrupt_on_sigterm()
    workspace = _workspace()
    try:
        settle_after_start_up()
        view = run_with_live_view(lambda observer: resume_run(workspace, run_id, observer), as_json)
    finally:
        workspace.close()
    finish(view, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
