"""Backend types by name; each is imported only when a profile of its type is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mlyard.errors import ConfigError

if TYPE_CHECKING:
    from mlyard.artifacts.store import ArtifactStore
    from mlyard.backends.base import Backend
    from mlyard.settings import Settings

#: backend type -> "module:class"; every class takes (name, profile, settings, store).
BACKEND_TYPES: dict[str, str] = {
    "local": "mlyard.backends.local.backend:LocalBackend",
    "slurm": "mlyard.backends.slurm.backend:SlurmBackend",
}


def create_backend(name: str, settings: Settings, store: ArtifactStore) -> Backend:
    """The backend of profile ``name``; ``ConfigError`` for unknown names or types."""
    profile = settings.backend_profile(name)
    target = BACKEND_TYPES.get(profile.type)
    if target is None:
        raise ConfigError(
            f"Backend {name!r} has type {profile.type!r}, which mlyard does not know.",
            hint=f"Use one of: {', '.join(sorted(BACKEND_TYPES))}.",
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"Backend type {profile.type!r} needs an optional dependency: {exc.name}.",
            hint=f"Install it with: pip install 'mlyard[{profile.type}]'",
        ) from exc
    backend_class: type[Backend] = getattr(module, class_name)
    return backend_class(name, profile, settings, store)
