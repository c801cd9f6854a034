"""Use cases of runs: start, resume, cancel, list, show, logs. The CLI and ``mlyard.run`` call
these in-process (embedded mode) with the one settings object built at the entry point."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend
from mlyard.backends.registry import create_backend
from mlyard.errors import NotFoundError, RunError
from mlyard.models.backends import JobHandle
from mlyard.models.pipelines import PipelineGraph
from mlyard.models.runs import RunState, RunView, StepState
from mlyard.orchestration.code_package import build_code_package
from mlyard.orchestration.loading import LoadedPipeline, trace_pipeline
from mlyard.orchestration.reconciler import Orchestrator
from mlyard.orchestration.run_tracking import TRACKING_DRAIN_SECONDS
from mlyard.services.run_views import build_run_view, metric_step_run_ids
from mlyard.settings import Settings, load_settings
from mlyard.store.repository import (
    AttemptRow,
    MetadataStore,
    RunRow,
    StepRunRow,
    as_utc,
    utcnow,
)
from mlyard.tracking.base import Tracker
from mlyard.tracking.factory import create_tracker

RunViewObserver = Callable[[RunView], None]
#: The live view is refreshed at most this often, however many steps change.
OBSERVER_INTERVAL_SECONDS = 0.1
#: An orchestrator that has not written a heartbeat for this long is considered gone.
STALE_HEARTBEAT_SECONDS = 15.0


@dataclass
class Workspace:
    """What every run use case needs, opened once from the settings."""

    settings: Settings
    metadata: MetadataStore
    artifacts: ArtifactStore
    _tracker: Tracker | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings) -> Workspace:
        return cls(
            settings=settings,
            metadata=MetadataStore(settings.database_url),
            artifacts=ArtifactStore.from_settings(settings),
        )

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = create_tracker(self.settings)
        return self._tracker

    def close(self) -> None:
        self.metadata.close()


def prepare_run(
    workspace: Workspace,
    loaded: LoadedPipeline,
    params: dict[str, Any],
    *,
    backend_name: str | None = None,
    use_cache: bool = True,
) -> tuple[str, Backend]:
    """Trace, check everything that can be checked before anything runs, and store the run."""
    settings = workspace.settings
    name = backend_name or settings.default_backend
    graph = trace_pipeline(loaded, params)
    backend = create_backend(name, settings, workspace.artifacts)
    for node in graph.steps:
        backend.check_resources(node.resources)
    workspace.artifacts.check_reachable()
    workspace.tracker.check_reachable()
    code_digest = workspace.artifacts.put_bytes(build_code_package(loaded.project_root))
    run_id = uuid.uuid4().hex[:12]
    now = utcnow()
    run = RunRow(
        id=run_id,
        pipeline_name=graph.pipeline_name,
        state=RunState.PENDING.value,
        params=graph.params,
        graph=graph.model_dump(mode="json"),
        code_digest=code_digest,
        code_module=loaded.module_name,
        project_dir=str(loaded.project_root),
        backend=name,
        use_cache=use_cache,
        artifacts_url=workspace.artifacts.url,
        created_at=now,
        cancel_requested=False,
    )
    steps = [
        StepRunRow(
            id=f"{run_id}.{index}",
            run_id=run_id,
            name=node.name,
            state=StepState.PENDING.value,
            failures=0,
            infrastructure_failures=0,
        )
        for index, node in enumerate(graph.steps, start=1)
    ]
    workspace.metadata.add(run, *steps)
    return run_id, backend


def execute_run(
    workspace: Workspace,
    run_id: str,
    backend: Backend,
    observer: RunViewObserver | None = None,
    *,
    tracking_drain_seconds: float = TRACKING_DRAIN_SECONDS,
) -> RunView:
    """Drive the run to its end in this process; Ctrl-C cancels it (and re-raises). Its end
    waits up to ``tracking_drain_seconds`` for MLflow to take the last steps."""
    last_sent = 0.0

    def observe(orchestrator: Orchestrator) -> None:
        nonlocal last_sent
        finished = orchestrator.run.state in {s.value for s in RunState if s.is_terminal}
        if observer is None or (
            not finished and time.monotonic() - last_sent < OBSERVER_INTERVAL_SECONDS
        ):
            return
        last_sent = time.monotonic()
        records = orchestrator.steps.values()
        view = build_run_view(
            orchestrator.run,
            [r.row for r in records],
            [a for r in records for a in r.attempts],
            {r.row.id: r.outputs for r in records},
            warnings=orchestrator.warnings,
        )
        observer(view)

    orchestrator = Orchestrator(
        metadata=workspace.metadata,
        artifacts=workspace.artifacts,
        backend=backend,
        tracker=workspace.tracker,
        observer=observe,
        live_tracking=_live_tracking(workspace.settings),
        tracking_drain_seconds=tracking_drain_seconds,
    )
    try:
        orchestrator.execute(run_id)
    finally:
        backend.close()
    return show_run(workspace, run_id, warnings=orchestrator.warnings)


def _live_tracking(settings: Settings) -> bool:
    uri = settings.tracking_uri or ""
    return settings.tracking.live and uri.startswith(("http://", "https://"))


def resume_run(
    workspace: Workspace, run_id: str, observer: RunViewObserver | None = None
) -> RunView:
    """Finish a failed, cancelled or orphaned run: finished steps are kept, nothing runs twice.
    A succeeded run whose last steps MLflow did not take (it was slow, down, or the process
    was killed first) gets them sent, and nothing runs."""
    run = workspace.metadata.get_run(run_id)
    if run.state == RunState.SUCCEEDED.value and not _has_untracked_steps(workspace, run):
        raise RunError(f"Run {run.id} already succeeded; there is nothing to resume.")
    if orchestrator_alive(run):
        raise RunError(
            f"Run {run.id} is still being orchestrated by process {run.orchestrator_pid} on "
            f"{run.orchestrator_host}.",
            hint=f"Wait for it, or stop it first with `mlyard runs cancel {run.id}`.",
        )
    for row in workspace.metadata.step_runs(run.id):
        if row.state in (StepState.FAILED, StepState.CANCELLED, StepState.SKIPPED):
            workspace.metadata.update(
                StepRunRow,
                row.id,
                state=StepState.PENDING.value,
                failures=0,
                infrastructure_failures=0,
                next_attempt_at=None,
                finished_at=None,
                error=None,
                reason=None,
            )
    workspace.metadata.update(RunRow, run.id, cancel_requested=False)
    backend = create_backend(run.backend, _run_settings(workspace, run), workspace.artifacts)
    return execute_run(workspace, run.id, backend, observer)


def _has_untracked_steps(workspace: Workspace, run: RunRow) -> bool:
    """Whether a step of ``run`` ended with an attempt the tracker has not taken yet."""
    rows = [
        row
        for row in workspace.metadata.step_runs(run.id)
        if row.state in (StepState.SUCCEEDED, StepState.FAILED)
    ]
    latest: dict[str, AttemptRow] = {}
    for attempt in workspace.metadata.attempts(row.id for row in rows):
        known = latest.get(attempt.step_run_id)
        if known is None or attempt.number > known.number:
            latest[attempt.step_run_id] = attempt
    return any(not attempt.tracked for attempt in latest.values())


def _run_settings(workspace: Workspace, run: RunRow) -> Settings:
    """Settings as the run saw them: its project's mlyard.toml defines its backend profiles."""
    project = Path(run.project_dir)
    if run.backend in workspace.settings.backends or not project.is_dir():
        return workspace.settings
    return load_settings(project)


def orchestrator_alive(run: RunRow) -> bool:
    """Whether an orchestrator process is still driving ``run``."""
    if RunState(run.state).is_terminal or run.orchestrator_pid is None:
        return False
    heartbeat = as_utc(run.heartbeat_at)
    if heartbeat is not None and (utcnow() - heartbeat).total_seconds() > STALE_HEARTBEAT_SECONDS:
        return False
    import socket

    if run.orchestrator_host != socket.gethostname():
        return True  # another machine's process: trust its fresh heartbeat
    return bool(psutil.pid_exists(run.orchestrator_pid))


def cancel_run(workspace: Workspace, run_id: str) -> RunView:
    """Ask the run's orchestrator to cancel; cancel its jobs directly when none is alive."""
    run = workspace.metadata.get_run(run_id)
    if RunState(run.state).is_terminal:
        return show_run(workspace, run.id)
    workspace.metadata.update(RunRow, run.id, cancel_requested=True)
    if orchestrator_alive(run):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if RunState(workspace.metadata.get_run(run.id).state).is_terminal:
                break
            time.sleep(0.2)
        return show_run(workspace, run.id)
    backend = create_backend(run.backend, _run_settings(workspace, run), workspace.artifacts)
    orchestrator = Orchestrator(
        metadata=workspace.metadata,
        artifacts=workspace.artifacts,
        backend=backend,
        tracker=workspace.tracker,
    )
    orchestrator.execute(run.id)  # sees cancel_requested at once and cancels every job
    return show_run(workspace, run.id)


def show_run(workspace: Workspace, run_id: str, warnings: list[str] | None = None) -> RunView:
    metadata = workspace.metadata
    run = metadata.get_run(run_id)
    rows = metadata.step_runs(run.id)
    ids = [row.id for row in rows]
    mlflow_url = None
    if run.mlflow_run_id and workspace.settings.tracking_uri:
        mlflow_url = workspace.tracker.run_url(run.mlflow_run_id)
    return build_run_view(
        run,
        rows,
        metadata.attempts(ids),
        metadata.outputs(ids),
        metadata.metrics(metric_step_run_ids(rows)),
        metadata.model_versions(ids),
        warnings or [],
        mlflow_url,
    )


def list_runs(
    workspace: Workspace, *, limit: int = 20, pipeline: str | None = None
) -> list[RunRow]:
    return workspace.metadata.list_runs(limit=limit, pipeline=pipeline)


def step_logs(
    workspace: Workspace, run_id: str, step: str | None, *, follow: bool = False
) -> Iterator[str]:
    """The log lines of one step's latest attempt (the only step when ``step`` is None)."""
    view = show_run(workspace, run_id)
    graph_steps = [s for s in view.steps if s.log_handle is not None]
    if step is None:
        if len(graph_steps) != 1:
            names = ", ".join(s.name for s in view.steps)
            raise RunError(
                f"Run {view.id} has several steps; say which one's logs to show.",
                hint=f"`mlyard runs logs {view.id} STEP` with STEP one of: {names}.",
            )
        chosen = graph_steps[0]
    else:
        matches = [s for s in view.steps if s.name == step]
        if not matches:
            raise NotFoundError(
                f"Run {view.id} has no step {step!r}.",
                hint=f"Its steps: {', '.join(s.name for s in view.steps)}.",
            )
        chosen = matches[0]
    if chosen.log_handle is None:
        reason = "it was cached" if chosen.state == StepState.CACHED else "it has not started"
        raise RunError(f"Step {chosen.name!r} of run {view.id} has no logs: {reason}.")
    handle: JobHandle = chosen.log_handle
    run = workspace.metadata.get_run(view.id)
    backend = create_backend(handle.backend, _run_settings(workspace, run), workspace.artifacts)
    yield from backend.logs(handle, follow=follow)


def graph_of(run: RunRow) -> PipelineGraph:
    return PipelineGraph.model_validate(run.graph)
