from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.errors import PipelineDefinitionError
from mlyard.orchestration.code_package import build_code_package
from mlyard.orchestration.loading import load_pipeline_file, split_target

TWO_PIPELINES = """
from mlyard import pipeline, step

@step
def one() -> int:
    return 1

@pipeline
def first() -> None:
    one()

@pipeline
def second() -> None:
    one()
"""


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineDefinitionError, match="No pipeline file"):
        load_pipeline_file(tmp_path / "nope.py")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken_syntax.py"
    path.write_text("x = 1\ndef f(:\n    pass\n")
    with pytest.raises(PipelineDefinitionError, match="syntax error at line 2"):
        load_pipeline_file(path)


def test_file_without_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "no_pipeline_here.py"
    path.write_text("x = 1\n")
    with pytest.raises(PipelineDefinitionError, match="defines no pipeline"):
        load_pipeline_file(path)


def test_several_pipelines_need_a_name(tmp_path: Path) -> None:
    path = tmp_path / "two_pipelines.py"
    path.write_text(TWO_PIPELINES)
    with pytest.raises(PipelineDefinitionError, match="several pipelines: first, second"):
        load_pipeline_file(path)
    assert load_pipeline_file(path, "second").pipeline.name == "second"
    with pytest.raises(PipelineDefinitionError, match="no pipeline called 'third'"):
        load_pipeline_file(path, "third")


def test_split_target() -> None:
    assert split_target("a/b.py:train") == (Path("a/b.py"), "train")
    assert split_target("a/b.py") == (Path("a/b.py"), None)


def test_code_package_is_deterministic_and_skips_environments(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text("print('hi')\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big.py").write_text("x = 1\n")
    (tmp_path / "data.bin").write_bytes(b"\0" * 100)
    first = build_code_package(tmp_path)
    (tmp_path / "pipeline.py").touch()  # a new mtime must not change the bytes
    assert build_code_package(tmp_path) == first
    import io
    import zipfile

    assert zipfile.ZipFile(io.BytesIO(first)).namelist() == ["pipeline.py"]
