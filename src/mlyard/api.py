"""``mlyard.run``: run a pipeline from Python or a notebook, in this process (embedded mode)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlyard.errors import PipelineDefinitionError

if TYPE_CHECKING:
    from mlyard.models.runs import RunView
    from mlyard.orchestration.decorators import Pipeline
    from mlyard.settings import Settings


def run(
    pipeline: Pipeline[Any],
    /,
    *,
    backend: str | None = None,
    cache: bool = True,
    params: dict[str, Any] | None = None,
    settings: Settings | None = None,
    **parameters: Any,
) -> RunView:
    """Run ``pipeline`` with its parameters and wait for it; returns the run.

    The returned ``RunView`` has the run's ``state``, ``steps`` (each with its state and output
    references), ``metrics`` and ``usage``. A failed step does not raise: check
    ``run.succeeded`` / ``run.error``. Definition errors (unknown parameter, a resource request
    the backend can never satisfy, an unreachable store) raise ``MlyardError`` before anything
    runs. Use ``params={...}`` for parameters named like this function's own options.
    """
    from mlyard.backends.registry import warm_up_backend
    from mlyard.orchestration.decorators import Pipeline
    from mlyard.orchestration.loading import loaded_from_function
    from mlyard.runtime.execute import IN_STEP_VARIABLE
    from mlyard.services.runs import Workspace, execute_run, prepare_run
    from mlyard.settings import load_settings

    if os.environ.get(IN_STEP_VARIABLE):
        raise PipelineDefinitionError(
            "mlyard.run() was called inside a running step.",
            hint="Guard the call with `if __name__ == '__main__':` in the pipeline file, so "
            "step processes importing the file do not start runs.",
        )
    if not isinstance(pipeline, Pipeline):
        raise PipelineDefinitionError(
            f"mlyard.run() needs a function decorated with @pipeline, got {pipeline!r}."
        )
    loaded = loaded_from_function(pipeline)
    settings = settings or load_settings(Path.cwd())
    warm_up_backend(backend, settings)
    workspace = Workspace.open(settings)
    try:
        all_params = {**(params or {}), **parameters}
        run_id, chosen = prepare_run(
            workspace, loaded, all_params, backend_name=backend, use_cache=cache
        )
        return execute_run(workspace, run_id, chosen)
    finally:
        workspace.close()
