"""Pipelines and helpers of the SLURM benchmarks (imported on the compute node too: keep the
top-level imports to mlyard itself)."""

from __future__ import annotations

import importlib.util
import io
import shlex
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from mlyard import pipeline, step

REPO = Path(__file__).resolve().parents[2]


def noop_value() -> int:
    return 0


@step
def noop() -> int:
    return noop_value()


@pipeline
def trivial() -> int:
    return noop()


@step
def leaf(index: int) -> int:
    return index


@step
def gather(values: list[int]) -> int:
    return sum(values)


@pipeline
def fan_out(width: int = 50) -> int:
    return gather([leaf(index) for index in range(width)])


def quickstart_pipeline() -> Any:
    """The quickstart example's pipeline object, loaded from its file unchanged."""
    path = REPO / "examples" / "quickstart" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("quickstart_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["quickstart_pipeline"] = module
    spec.loader.exec_module(module)
    return module.quickstart


def warm_up(settings: Any, home: Path) -> None:
    """One run first, so both sides find warm file caches on the node."""
    import mlyard

    mlyard.run(trivial, backend="hpc", settings=settings, cache=False)
    prepare_plain_job(settings, home / "plain")


def _code_package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(Path(__file__), "bench_tasks.py")
    return buffer.getvalue()


#: How the plain baseline waits for its job: sbatch's own --wait, or a tight squeue loop run on
#: the login node (the best a hand-written submitter could do, at 4 controller queries a second).
WAIT_COMMANDS = {
    "sbatch-wait": "sbatch --wait --parsable {script}",
    "squeue-loop": "id=$(sbatch --parsable {script}) && "
    'while [ -n "$(squeue -h -j $id -t PD,CF,R,CG -o %i)" ]; do sleep 0.25; done',
}


def prepare_plain_job(settings: Any, store_dir: Path, wait: str = "sbatch-wait") -> float:
    """Prepare a trivial runtime task and its job script (not timed), then time submitting it
    and waiting for its end (``wait``: a key of WAIT_COMMANDS) over the backend's SSH
    connection."""
    from mlyard.artifacts.store import ArtifactStore
    from mlyard.backends.slurm.backend import SlurmBackend
    from mlyard.models.tasks import CodePackage, TaskSpec

    store = ArtifactStore(str(store_dir))
    backend = SlurmBackend("hpc", settings.backends["hpc"], settings, store)
    try:
        attempt_id = f"plain{uuid.uuid4().hex[:10]}.1.1"
        spec = TaskSpec(
            run_id="plain",
            step_run_id=attempt_id[:-2],
            attempt_id=attempt_id,
            attempt=1,
            step_name="noop",
            function="bench_tasks:noop_value",
            code=CodePackage(digest=store.put_bytes(_code_package()), module="bench_tasks"),
            artifact_store=store.url,
        )
        uri = store.write_document(attempt_id, "task.json", spec.model_dump_json().encode())
        prepared = backend.route.prepare(spec, uri)
        script = backend.render_script(attempt_id, spec.resources, prepared)
        path = f"{backend.workdir}/jobs/{attempt_id}.plain.sbatch"
        backend.shell.write_file(path, script.encode())
        started = time.perf_counter()
        done = backend.shell.run(WAIT_COMMANDS[wait].format(script=shlex.quote(path)))
        elapsed = time.perf_counter() - started
        assert done.ok, done.output
        return elapsed
    finally:
        backend.close()
