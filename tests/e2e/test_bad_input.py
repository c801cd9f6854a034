"""Bad input gets one clear paragraph, a non-zero exit and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json

pytestmark = pytest.mark.e2e
QUICKSTART = str(EXAMPLES / "quickstart" / "pipeline.py")


def _fails_cleanly(*args: str, expected: str, code: int = 2, **kwargs: object) -> str:
    done = mlyard(*args, **kwargs)  # type: ignore[arg-type]
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert expected in output, output
    assert "Traceback" not in output
    return output


def test_missing_file(tmp_path: Path) -> None:
    _fails_cleanly("run", str(tmp_path / "missing.py"), expected="No pipeline file")


def test_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def (:\n")
    _fails_cleanly("run", str(path), expected="syntax error at line 1")


def test_unknown_and_mistyped_parameter() -> None:
    _fails_cleanly("run", QUICKSTART, "-p", "gat=0.5", expected="Did you mean 'gate'")
    _fails_cleanly("run", QUICKSTART, "-p", "seed=abc", expected="must be int")


def test_unknown_backend() -> None:
    _fails_cleanly("run", QUICKSTART, "--backend", "hpc", expected="Unknown backend 'hpc'")


def test_resource_request_larger_than_the_machine(tmp_path: Path) -> None:
    path = tmp_path / "greedy.py"
    path.write_text(
        "from mlyard import Resources, pipeline, step\n"
        "@step(resources=Resources(cpus=4096))\n"
        "def big() -> None: ...\n"
        "@step(resources=Resources(gpus=1))\n"
        "def gpu() -> None: ...\n"
        "@pipeline\n"
        "def greedy() -> None:\n    big()\n"
        "@pipeline\n"
        "def wants_gpu() -> None:\n    gpu()\n"
    )
    _fails_cleanly("run", f"{path}:greedy", expected="4096 CPUs")
    _fails_cleanly("run", f"{path}:wants_gpu", expected="GPU")
    assert mlyard_json("runs", "ls") == []  # nothing was started or half-stored


def test_unstorable_output(tmp_path: Path) -> None:
    path = tmp_path / "unstorable.py"
    path.write_text(
        "import threading\n"
        "from mlyard import pipeline, step\n"
        "@step\n"
        "def lock() -> object:\n    return threading.Lock()\n"
        "@pipeline\n"
        "def unstorable() -> None:\n    lock()\n"
    )
    output = _fails_cleanly("run", str(path), expected="No materializer could store", code=1)
    assert "lock" in output.lower()


#: An artifact store on an S3 endpoint where nothing listens.
UNREACHABLE_S3_STORE = {
    "MLYARD_STORAGE__ARTIFACTS": "s3://bucket/x",
    "MLYARD_STORAGE__ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "y",
}


def test_unreachable_mlflow_and_s3() -> None:
    _fails_cleanly(
        "run",
        QUICKSTART,
        expected="MLflow tracking server at http://127.0.0.1:9",
        code=1,
        env={"MLYARD_TRACKING__URI": "http://127.0.0.1:9"},
    )
    _fails_cleanly(
        "run",
        QUICKSTART,
        expected="http://127.0.0.1:9",
        code=1,
        env=UNREACHABLE_S3_STORE,
    )


def test_unknown_run_id() -> None:
    _fails_cleanly("runs", "show", "doesnotexist", expected="No run with id", code=3)


def test_step_called_at_import_time_and_recursive_pipeline(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(
        "from mlyard import pipeline, step\n"
        "@step\n"
        "def one() -> int:\n    return 1\n"
        "one()\n"
        "@pipeline\n"
        "def p() -> None:\n    one()\n"
    )
    _fails_cleanly("run", str(outside), expected="called outside a pipeline")
    loop = tmp_path / "loop.py"
    loop.write_text(
        "from mlyard import pipeline, step\n"
        "@step\n"
        "def one() -> int:\n    return 1\n"
        "@pipeline\n"
        "def again() -> None:\n    one()\n    again.definition.function()\n"
    )
    _fails_cleanly("run", str(loop), expected="calls itself without end (a cycle)")


def test_several_pipelines_without_a_name(tmp_path: Path) -> None:
    path = tmp_path / "several.py"
    path.write_text(
        "from mlyard import pipeline, step\n"
        "@step\n"
        "def one() -> int:\n    return 1\n"
        "@pipeline\n"
        "def a() -> None:\n    one()\n"
        "@pipeline\n"
        "def b() -> None:\n    one()\n"
    )
    _fails_cleanly("run", str(path), expected="several pipelines: a, b")
    _fails_cleanly("run", str(tmp_path / "nothing_here.py"), expected="No pipeline file")


def test_consume_refuses_at_start_what_it_cannot_reach_or_find(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    embedded = ("--source", f"{queue}?topic=in", "--sink", f"{queue}?topic=out")
    _fails_cleanly(
        "consume",
        *("--source", "redis://127.0.0.1:9/0?stream=in&group=g"),
        *("--sink", "redis://127.0.0.1:9/0?stream=out", "--model", "noop"),
        expected="Redis at redis://127.0.0.1:9/0?stream=in&group=g is not reachable",
    )
    _fails_cleanly(
        "consume",
        *embedded,
        "--model",
        "noop",
        expected="Could not reach the S3 endpoint http://127.0.0.1:9",
        code=1,
        env=UNREACHABLE_S3_STORE,
    )
    _fails_cleanly(
        "consume",
        *embedded,
        "--model",
        "models:/nope@champion",
        expected="Cannot resolve 'models:/nope@champion'",
        code=3,
    )
