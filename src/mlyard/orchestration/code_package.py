"""The user's project as a deterministic zip, stored once per content digest.

Steps import the pipeline module from this package on the compute side, so every backend runs
exactly the code that was traced, and ``resume`` runs the code of the original run even when the
files changed since.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from mlyard.errors import PipelineDefinitionError

#: Directories never packaged: environments, caches, VCS metadata, mlyard's own state.
EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".venv",
        "venv",
        "env",
        "__pycache__",
        "node_modules",
        "site-packages",
        ".mlyard",
        ".tox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "build",
        "dist",
    }
)
PACKAGED_SUFFIXES = frozenset({".py", ".toml", ".txt", ".json", ".yaml", ".yml", ".cfg"})
MAX_PACKAGE_BYTES = 50 * 1024 * 1024
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def project_files(project_root: Path) -> list[Path]:
    """The files that make up the project: sources and small config files, sorted."""
    files: list[Path] = []
    for directory, dirnames, filenames in os.walk(project_root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith(".")
        )
        for filename in sorted(filenames):
            path = Path(directory) / filename
            if path.suffix in PACKAGED_SUFFIXES and not path.is_symlink():
                files.append(path)
    return files


def build_code_package(project_root: Path) -> bytes:
    """A zip of the project whose bytes depend only on file names and contents."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in project_files(project_root):
            data = path.read_bytes()
            total += len(data)
            if total > MAX_PACKAGE_BYTES:
                raise PipelineDefinitionError(
                    f"The project under {project_root} has more than "
                    f"{MAX_PACKAGE_BYTES // 2**20} MB of source files to package.",
                    hint="Keep data out of the pipeline's directory: pass data locations as "
                    "pipeline parameters (a path or s3:// URI).",
                )
            info = zipfile.ZipInfo(path.relative_to(project_root).as_posix(), _FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
