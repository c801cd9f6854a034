"""Backend types by name; each is imported only when a profile of its type is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mlyard.errors import ConfigError
from mlyard.extras import require_extra

if TYPE_CHECKING:
    from mlyard.artifacts.store import ArtifactStore
    from mlyard.backends.base import Backend
    from mlyard.settings import Settings

#: backend type -> "module:class"; every class takes (name, profile, settings, store).
BACKEND_TYPES: dict[str, str] = {
    "local": "mlyard.backends.local.backend:LocalBackend",
    "slurm": "mlyard.backends.slurm.backend:SlurmBackend",
    "kubernetes": "mlyard.backends.kubernetes.backend:KubernetesBackend",
}
#: The optional extra a backend type needs (slurm's asyncssh only over SSH: SlurmBackend checks).
BACKEND_EXTRAS: dict[str, str] = {"kubernetes": "k8s"}


def create_backend(name: str, settings: Settings, store: ArtifactStore) -> Backend:
    """The backend of profile ``name``; ``ConfigError`` for unknown names or types."""
    profile = settings.backend_profile(name)
    return _backend_class(name, profile.type)(name, profile, settings, store)


def warm_up_backend(name: str | None, settings: Settings) -> None:
    """Let backend ``name`` (the default one when None) start its slow parts early, such as the
    local fork server; silent when the profile is unusable (``create_backend`` reports that with
    the right message later). Call it before importing the heavy modules a run needs, so that
    their import overlaps the warm-up."""
    name = name or settings.default_backend
    try:
        profile = settings.backend_profile(name)
        backend_class = _backend_class(name, profile.type)
    except ConfigError:
        profile = None
    if profile is None or profile.type != "local":
        # `mlyard run` may have started the local fork server on spec (lifecycle.py).
        from mlyard.backends.local import fork_server

        fork_server.discard_prestarted()
    if profile is not None:
        backend_class.warm_up(profile, settings)


def _backend_class(name: str, backend_type: str) -> type[Backend]:
    target = BACKEND_TYPES.get(backend_type)
    if target is None:
        raise ConfigError(
            f"Backend {name!r} has type {backend_type!r}, which mlyard does not know.",
            hint=f"Use one of: {', '.join(sorted(BACKEND_TYPES))}.",
        )
    module_name, class_name = target.split(":")
    if backend_type in BACKEND_EXTRAS:  # checked before a run is stored or a cluster is asked
        require_extra(BACKEND_EXTRAS[backend_type], needed_by=f"Backend {name!r} ({backend_type})")
    module = importlib.import_module(module_name)
    backend_class: type[Backend] = getattr(module, class_name)
    return backend_class
