"""Which libraries the fork server imports for a run: those its pipeline file imports.

A step process forked from a server that imported numpy or scikit-learn starts with them
loaded instead of importing them again (~0.1 s for numpy, ~0.5 s for scikit-learn here); a
pipeline that uses neither does not pay for them in the server's start-up and in every fork.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from mlyard.artifacts.store import ArtifactStore
from mlyard.models.tasks import CodePackage
from mlyard.runtime.code import ensure_code_package

logger = logging.getLogger(__name__)

#: Libraries known to start no threads and touch no GPU at import, so that the server can
#: fork after importing them. (PyTorch is left out: the server must not load CUDA libraries.)
FORK_SAFE_LIBRARIES = frozenset({"numpy", "pandas", "scipy", "sklearn", "joblib"})


def libraries_to_preload(store: ArtifactStore, code: CodePackage) -> tuple[str, ...]:
    """The fork-safe libraries the run's pipeline file imports anywhere (steps often import
    inside their body), read from the run's code package: the same for a new and a resumed
    run. The package is extracted where its steps will find it; none when it cannot be read
    (each step then meets the problem itself and reports it)."""
    try:
        code_dir = ensure_code_package(store, code.digest)
        source = (code_dir / Path(*code.module.split("."))).with_suffix(".py").read_bytes()
        tree = ast.parse(source)
    except Exception as error:  # a step reports it; preloading is only an optimisation
        logger.debug("no libraries to preload from %s: %s", code.module, error)
        return ()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.partition(".")[0])
    return tuple(sorted(imported & FORK_SAFE_LIBRARIES))
