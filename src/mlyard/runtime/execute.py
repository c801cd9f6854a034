"""Running one attempt of one step: the heart of ``python -m mlyard.runtime``.

Reads the task document, imports the step from the code package, loads its inputs, runs it under
a usage meter with a step log installed, stores its outputs and writes ``result.json`` last, so
the presence of the result means the attempt ended. Needs nothing but the artifact store.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from mlyard.artifacts.materializers import load_value, save_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.models.tasks import ArtifactRef, StepErrorInfo, TaskResult, TaskSpec, Usage
from mlyard.runtime.code import ensure_code_package, import_step_function
from mlyard.runtime.live_metrics import LiveMetrics
from mlyard.runtime.usage import UsageMeter
from mlyard.tracking.context import StepLog, install_step_log, reset_step_log

RESULT_DOCUMENT = "result.json"
TASK_DOCUMENT = "task.json"
#: Set in every step process, so that ``mlyard.run`` refuses to start a run inside a step.
IN_STEP_VARIABLE = "MLYARD_IN_STEP"


class StepOutputError(Exception):
    """The step returned something that does not fit its declared outputs."""


def worker_rank() -> int:
    """This process's rank in a distributed step (``RANK`` from torchrun); 0 when alone."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def run_worker_rank(spec: TaskSpec, store: ArtifactStore) -> int:
    """Run the step as a non-zero rank of a distributed step: the same function and inputs,
    but rank 0 alone stores outputs, models, metrics and the result. Returns the exit status."""
    if store.read_document(spec.attempt_id, RESULT_DOCUMENT) is not None:
        return 0  # the attempt already ended (a requeued job): rank 0 will not run it again
    os.environ[IN_STEP_VARIABLE] = "1"
    token = install_step_log(StepLog(save_model=_not_stored))
    try:
        function, arguments = _prepare_call(spec, store)
        function(**arguments)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 1
    finally:
        reset_step_log(token)
    return 0


def _not_stored(model: object) -> ArtifactRef:
    """log_model on a non-zero rank: accepted (DDP code often calls it on every rank) but not
    stored, since rank 0 logs the same model."""
    return ArtifactRef(
        digest="sha256:", materializer="none", type_name=type(model).__name__, size_bytes=0
    )


def _prepare_call(spec: TaskSpec, store: ArtifactStore) -> tuple[Any, dict[str, Any]]:
    """The step function, imported from the code package, and its loaded arguments."""
    code_dir = ensure_code_package(store, spec.code.digest)
    function = import_step_function(code_dir, spec.function)
    arguments: dict[str, Any] = dict(spec.params)
    for name, ref in spec.inputs.items():
        arguments[name] = load_value(store, ref)
    for name, refs in spec.input_lists.items():
        arguments[name] = [load_value(store, ref) for ref in refs]
    return function, arguments


def run_task(spec: TaskSpec, store: ArtifactStore) -> TaskResult:
    """Run the attempt described by ``spec``; never raises for the step's own errors."""
    existing = store.read_document(spec.attempt_id, RESULT_DOCUMENT)
    if existing is not None:  # a re-submitted attempt that already ended: do not run twice
        return TaskResult.model_validate_json(existing)
    os.environ[IN_STEP_VARIABLE] = "1"
    started = datetime.now(UTC)
    live = LiveMetrics(spec.tracking, spec.step_name, spec.attempt_id)
    step_log = StepLog(
        save_model=lambda model: save_value(store, model),
        on_metric=live.add if live.start() else None,
    )
    devices = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    meter = UsageMeter(gpus=spec.resources.gpus if devices else 0.0, gpu_devices=devices)
    metered = False
    try:
        function, arguments = _prepare_call(spec, store)
        token = install_step_log(step_log)
        try:
            with meter:
                metered = True
                value = function(**arguments)
        finally:
            reset_step_log(token)
        outputs = {
            name: save_value(store, output) for name, output in _split_outputs(spec, value).items()
        }
        outcome: dict[str, Any] = {
            "status": "succeeded",
            "outputs": outputs,
            "models": step_log.models,
            "usage": meter.usage(),
        }
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        outcome = {
            "status": "failed",
            "usage": meter.usage() if metered else Usage(),
            "error": StepErrorInfo(
                type=type(exc).__name__,
                message=str(exc) or type(exc).__name__,
                traceback=traceback.format_exc(),
            ),
        }
    live.finish()
    result = TaskResult(
        attempt_id=spec.attempt_id,
        live_metrics_sent=live.sent,
        mlflow_run_id=live.run_id,
        metrics=step_log.metrics,
        params=step_log.params,
        started_at=started,
        finished_at=datetime.now(UTC),
        host=socket.gethostname(),
        **outcome,
    )
    store.write_document(spec.attempt_id, RESULT_DOCUMENT, result.model_dump_json().encode())
    return result


def _split_outputs(spec: TaskSpec, value: Any) -> dict[str, Any]:
    names = spec.output_names
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: value}
    if not isinstance(value, tuple) or len(value) != len(names):
        got = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        raise StepOutputError(
            f"Step {spec.step_name!r} declares {len(names)} outputs ({', '.join(names)}) "
            f"but returned {got}."
        )
    return dict(zip(names, value, strict=True))
