"""Which libraries the fork server imports for a run: those its pipeline file imports.

A step process forked from a server that imported numpy or scikit-learn starts with them
loaded instead of importing them again (~0.1 s for numpy, ~0.5 s for scikit-learn here); a
pipeline that uses neither does not pay for them in the server's start-up and in every fork.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: Libraries known to start no threads and touch no GPU at import, so that the server can
#: fork after importing them. (PyTorch is left out: the server must not load CUDA libraries.)
FORK_SAFE_LIBRARIES = frozenset({"numpy", "pandas", "scipy", "sklearn", "joblib"})


def libraries_to_preload(module_name: str) -> tuple[str, ...]:
    """The fork-safe libraries the file of module ``module_name`` imports anywhere (steps
    often import inside their body); none when the module is not loaded in this process (a
    resumed run does not import the pipeline) or its source cannot be read."""
    source_path = getattr(sys.modules.get(module_name), "__file__", None)
    if source_path is None:
        return ()
    try:
        tree = ast.parse(Path(source_path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return ()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.partition(".")[0])
    return tuple(sorted(imported & FORK_SAFE_LIBRARIES))
