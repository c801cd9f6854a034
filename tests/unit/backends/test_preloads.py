"""The libraries a fork server preloads for a run: the fork-safe ones its pipeline file imports,
read from the run's code package."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.local.preloads import libraries_to_preload
from mlyard.models.tasks import CodePackage
from mlyard.orchestration.code_package import build_code_package
from mlyard.runtime.code import CODE_CACHE_VARIABLE

PIPELINE_SOURCE = """
import json
import numpy as np
from . import helpers  # the project's own code, not a library

def train():
    from sklearn.linear_model import LogisticRegression  # imported inside a step
    import torch  # never preloaded: the fork server must not load CUDA libraries
    return LogisticRegression, torch
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    monkeypatch.setenv(CODE_CACHE_VARIABLE, str(tmp_path / "code-cache"))
    return ArtifactStore(str(tmp_path / "artifacts"))


def _package(store: ArtifactStore, project: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    return store.put_bytes(build_code_package(project))


def test_the_fork_safe_libraries_a_pipeline_file_imports_anywhere(
    store: ArtifactStore, tmp_path: Path
) -> None:
    digest = _package(store, tmp_path / "project", {"flows/pipeline.py": PIPELINE_SOURCE})
    code = CodePackage(digest=digest, module="flows.pipeline")
    assert libraries_to_preload(store, code) == ("numpy", "sklearn")


def test_nothing_when_the_package_or_the_file_cannot_be_read(
    store: ArtifactStore, tmp_path: Path
) -> None:
    missing = CodePackage(digest="sha256:" + "0" * 64, module="pipeline")
    assert libraries_to_preload(store, missing) == ()
    digest = _package(store, tmp_path / "project", {"pipeline.py": "import numpy\nthis is not"})
    assert libraries_to_preload(store, CodePackage(digest=digest, module="pipeline")) == ()
    assert libraries_to_preload(store, CodePackage(digest=digest, module="elsewhere")) == ()
