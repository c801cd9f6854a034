from __future__ import annotations

import importlib
import sys
from pathlib import Path

from mlyard.orchestration.fingerprint import code_fingerprint

HELPER = "def scale(x):\n    return x * {factor}\n"
STEPS = """
from fp_helper import scale

def work(x):
    return scale(x) + 1

def other(x):
    return x
"""


def _fingerprints(project: Path, factor: int) -> tuple[str, str]:
    (project / "fp_helper.py").write_text(HELPER.format(factor=factor))
    (project / "fp_steps.py").write_text(STEPS)
    for name in ("fp_helper", "fp_steps"):
        sys.modules.pop(name, None)
    sys.path.insert(0, str(project))
    try:
        steps = importlib.import_module("fp_steps")
        return code_fingerprint(steps.work, project), code_fingerprint(steps.other, project)
    finally:
        sys.path.remove(str(project))
        for name in ("fp_helper", "fp_steps"):
            sys.modules.pop(name, None)


def test_changing_a_project_helper_changes_only_the_callers_fingerprint(tmp_path: Path) -> None:
    work_2, other_2 = _fingerprints(tmp_path, 2)
    work_3, other_3 = _fingerprints(tmp_path, 3)
    assert work_2 != work_3
    assert other_2 == other_3
    assert _fingerprints(tmp_path, 2) == (work_2, other_2)
