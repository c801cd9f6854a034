"""Rich renderings of runs: the live step tree, the end-of-run summary, run tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from mlyard.models.resources import format_size
from mlyard.models.runs import RunView, StepState, StepView

if TYPE_CHECKING:  # SQLAlchemy costs ~80 ms to import; only `runs ls` needs it
    from mlyard.store.repository import RunRow

STATE_STYLES = {
    "PENDING": ("dim", "·"),
    "QUEUED": ("cyan", "…"),
    "RUNNING": ("bold blue", "▶"),
    "SUCCEEDED": ("green", "✔"),
    "CACHED": ("green", "↺"),
    "FAILED": ("bold red", "✘"),
    "CANCELLED": ("yellow", "■"),
    "SKIPPED": ("dim", "−"),
}


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"


def _step_line(step: StepView) -> Text:
    style, mark = STATE_STYLES.get(step.state.value, ("", "?"))
    line = Text(f"{mark} ", style=style)
    line.append(step.name, style="bold" if step.state == StepState.RUNNING else "")
    line.append(f"  {step.state.value}", style=style)
    if step.duration_seconds is not None and step.state != StepState.CACHED:
        line.append(f"  {_seconds(step.duration_seconds)}", style="dim")
    if step.state == StepState.CACHED and step.cached_from_run_id:
        line.append(f"  from run {step.cached_from_run_id}", style="dim")
    if step.retries:
        line.append(f"  retry {step.retries}", style="yellow")
    if step.reason and step.state in (StepState.PENDING, StepState.QUEUED, StepState.SKIPPED):
        line.append(f"  ({step.reason})", style="dim")
    if any(ref.materializer == "cloudpickle" for ref in step.outputs.values()):
        line.append("  [stored with cloudpickle]", style="yellow")
    return line


def run_tree(view: RunView, max_steps: int = 60) -> Tree:
    style, _ = STATE_STYLES.get(view.state.value, ("", ""))
    tree = Tree(
        Text.assemble(
            ("run ", "dim"), (view.id, "bold"), f" {view.pipeline_name} ", (view.state.value, style)
        )
    )
    steps = view.steps
    if len(steps) > max_steps:
        active = [s for s in steps if s.state in (StepState.RUNNING, StepState.FAILED)]
        counts: dict[str, int] = {}
        for s in steps:
            counts[s.state.value] = counts.get(s.state.value, 0) + 1
        summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
        tree.add(Text(f"{len(steps)} steps: {summary}", style="dim"))
        steps = active[:max_steps]
    for step in steps:
        tree.add(_step_line(step))
    return tree


def run_summary(view: RunView) -> RenderableType:
    parts: list[RenderableType] = [run_tree(view)]
    for step in view.steps:
        if step.state == StepState.FAILED and step.error:
            parts.append(Text(f"\nStep {step.name!r} failed: {step.error}", style="red"))
    if view.metrics:
        parts.append(_metrics_table(view))
    usage = view.usage
    usage_line = (
        f"Usage: {_seconds(view.duration_seconds)} wall for the run, "
        f"{usage.cpu_seconds:.1f} CPU-s, peak {format_size(usage.peak_memory_bytes)}"
    )
    if usage.gpu_seconds:
        usage_line += f", {usage.gpu_seconds:.1f} GPU-s"
    if usage.cost is not None:
        usage_line += f", cost {usage.cost:.4g}"
    parts.append(Text(usage_line))
    cached = sum(1 for s in view.steps if s.state == StepState.CACHED)
    if cached:
        parts.append(Text(f"Cache: {cached} of {len(view.steps)} steps reused", style="dim"))
    parts.append(Text(f"Artifacts: {view.artifacts_url}", style="dim"))
    if view.mlflow_url:
        parts.append(Text(f"MLflow: {view.mlflow_url}", style="dim"))
    for model in view.models:
        parts.append(Text(f"Registered model: {model}", style="green"))
    for warning in view.warnings:
        parts.append(Text(f"Warning: {warning}", style="yellow"))
    return Group(*parts)


def _metrics_table(view: RunView) -> Table:
    """Every metric of the run; those of cached steps say which run logged them."""
    table = Table(title="Metrics", title_justify="left", show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if view.cached_metrics:
        table.add_column("")
    for key, value in sorted(view.metrics.items()):
        cells = [Text(key), Text(f"{value:.4g}")]
        if view.cached_metrics:
            source = view.cached_metrics.get(key)
            cells.append(Text(f"cached, from run {source}" if source else "", style="dim"))
        table.add_row(*cells)
    return table


def runs_table(runs: Sequence[RunRow]) -> Table:
    table = Table(show_edge=False)
    for column in ("run", "pipeline", "state", "backend", "created"):
        table.add_column(column)
    for run in runs:
        style, _ = STATE_STYLES.get(run.state, ("", ""))
        table.add_row(
            run.id,
            run.pipeline_name,
            Text(run.state, style=style),
            run.backend,
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table
