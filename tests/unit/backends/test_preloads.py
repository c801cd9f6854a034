"""The libraries a fork server preloads for a run: the fork-safe ones its pipeline imports."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlyard.backends.local.preloads import libraries_to_preload

PIPELINE_SOURCE = """
import json
import numpy as np
from . import sibling_helpers_are_not_libraries

def train():
    from sklearn.linear_model import LogisticRegression  # imported inside a step
    import torch  # never preloaded: the fork server must not load CUDA libraries
    return LogisticRegression, torch
"""


@pytest.fixture
def loaded_module(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "my_pipeline_module.py"
    path.write_text(PIPELINE_SOURCE.replace("from . import sibling_helpers_are_not_libraries", ""))
    spec = importlib.util.spec_from_file_location("my_pipeline_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    path.write_text(PIPELINE_SOURCE)  # what is parsed is the file, relative imports included
    yield spec.name
    del sys.modules[spec.name]


def test_the_fork_safe_libraries_a_pipeline_file_imports_anywhere(loaded_module: str) -> None:
    assert libraries_to_preload(loaded_module) == ("numpy", "sklearn")


def test_nothing_for_a_module_this_process_did_not_load() -> None:
    assert libraries_to_preload("a_module_never_imported_here") == ()


def test_nothing_when_the_source_is_gone(loaded_module: str) -> None:
    Path(sys.modules[loaded_module].__file__ or "").unlink()
    assert libraries_to_preload(loaded_module) == ()
