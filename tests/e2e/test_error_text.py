"""Errors reach the terminal exactly as written, brackets included (the cases of issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli import mlyard

pytestmark = pytest.mark.e2e

OK_PIPELINE = "from mlyard import pipeline, step\n@step\ndef one() -> int:\n    return 1\n"
OK_PIPELINE += "@pipeline\ndef ok() -> None:\n    one()\n"


def test_unknown_backend_keeps_the_table_name(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(OK_PIPELINE)
    done = mlyard("run", str(tmp_path / "ok.py"), "--backend", "nowhere")
    assert done.returncode == 2, done.stderr
    assert "Add a [backends.nowhere] table to mlyard.toml" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_profile_keeps_the_table_name(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(OK_PIPELINE)
    (tmp_path / "mlyard.toml").write_text('[backends.hpc]\ntype = "slurm"\nhost = "bad host!"\n')
    done = mlyard("run", str(tmp_path / "ok.py"), "--backend", "hpc")
    assert done.returncode == 2, done.stderr
    assert "Fix [backends.hpc] in mlyard.toml" in done.stderr
    assert "Traceback" not in done.stderr
