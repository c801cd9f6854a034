"""``mlyard run --dry-run``: the manifests a run would apply, for review or GitOps, made without
touching the cluster or storing anything."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.registry import create_backend
from mlyard.errors import ConfigError
from mlyard.models.resources import Resources
from mlyard.orchestration.loading import LoadedPipeline, trace_pipeline
from mlyard.settings import Settings

#: The run id shown in dry-run manifests (a real run gets a fresh one).
DRY_RUN_ID = "dry-run"


@runtime_checkable
class RendersManifests(Protocol):
    """A backend whose jobs are declarative objects it can show before creating them."""

    def render_manifests(
        self,
        *,
        run_id: str,
        attempt_id: str,
        step_name: str,
        resources: Resources,
        task_uri: str,
        environment: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]: ...


def dry_run_manifests(
    settings: Settings,
    loaded: LoadedPipeline,
    params: dict[str, Any],
    *,
    backend_name: str | None = None,
) -> str:
    """The first attempt of every step of the pipeline as YAML documents, in run order."""
    import yaml

    name = backend_name or settings.default_backend
    graph = trace_pipeline(loaded, params)
    store = ArtifactStore.from_settings(settings)
    backend = create_backend(name, settings, store)
    try:
        if not isinstance(backend, RendersManifests):
            raise ConfigError(
                f"--dry-run prints the manifests of a Kubernetes backend; backend {name!r} is "
                f"of type {backend.profile.type!r}.",
                hint="Pass --backend with a profile of type 'kubernetes', or run without "
                "--dry-run.",
            )
        manifests: list[dict[str, Any]] = []
        for index, node in enumerate(graph.steps, start=1):
            attempt_id = f"{DRY_RUN_ID}.{index}.1"
            manifests += backend.render_manifests(
                run_id=DRY_RUN_ID,
                attempt_id=attempt_id,
                step_name=node.name,
                resources=node.resources,
                task_uri=store.document_uri(attempt_id, "task.json"),
                environment=node.environment,
            )
    finally:
        backend.close()
    text: str = yaml.safe_dump_all(manifests, sort_keys=False)
    return text
