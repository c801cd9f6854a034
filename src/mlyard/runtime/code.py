"""Making the run's code package importable on the compute side."""

from __future__ import annotations

import importlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlyard.artifacts.store import ArtifactStore

#: Overrides where extracted code packages are kept (one directory per digest).
CODE_CACHE_VARIABLE = "MLYARD_CODE_CACHE"


def code_cache_root() -> Path:
    configured = os.environ.get(CODE_CACHE_VARIABLE)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"mlyard-code-{os.getuid()}"


def ensure_code_package(store: ArtifactStore, digest: str) -> Path:
    """Extract the package once per digest (atomic rename) and return its directory."""
    root = code_cache_root()
    target = root / digest.replace(":", "-")
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with zipfile.ZipFile(io.BytesIO(store.get_bytes(digest))) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"unsafe path in code package: {member}")
            archive.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # another step extracted it first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def make_importable(code_dir: Path) -> None:
    """Put the extracted package first on ``sys.path`` (once)."""
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))


def import_step_function(code_dir: Path, reference: str) -> Callable[..., Any]:
    """Import ``module:qualname`` from the package and return the undecorated function."""
    make_importable(code_dir)
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    definition = getattr(target, "definition", None)
    function = getattr(definition, "function", target)
    if not callable(function):
        raise TypeError(f"{reference} is not a function")
    return function  # type: ignore[no-any-return]
