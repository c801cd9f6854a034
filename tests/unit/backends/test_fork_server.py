"""The fork server a run prestarts while it is prepared, and hands to its local backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlyard.backends.local import fork_server
from mlyard.backends.registry import warm_up_backend
from mlyard.settings import BackendProfile, Settings


@pytest.fixture(autouse=True)
def no_prestarted_server() -> Iterator[None]:
    yield
    leftover = fork_server._prestarted
    fork_server._prestarted = None
    if leftover is not None:
        leftover.close()


def test_the_prestarted_server_is_taken_once() -> None:
    fork_server.prestart()
    prestarted = fork_server._prestarted
    fork_server.prestart()  # idempotent
    assert fork_server._prestarted is prestarted
    taken = fork_server.take()
    try:
        assert taken is prestarted and taken.wait_ready()
        assert fork_server._prestarted is None
    finally:
        taken.close()


def test_prestarting_again_with_libraries_keeps_the_server_and_imports_them() -> None:
    fork_server.prestart()
    prestarted = fork_server._prestarted
    assert prestarted is not None
    fork_server.prestart(("json",))  # an S3 store's run wants s3fs: no second server
    taken = fork_server.take()
    try:
        assert taken is prestarted and taken.wait_ready()
    finally:
        taken.close()


def test_warming_up_a_local_backend_prestarts_unless_the_profile_says_no(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        backends={
            "plain": BackendProfile(type="local"),
            "no-fork": BackendProfile.model_validate({"type": "local", "fork_server": False}),
        },
    )
    warm_up_backend("no-fork", settings)
    assert fork_server._prestarted is None
    warm_up_backend("does-not-exist", settings)  # reported later, by create_backend
    assert fork_server._prestarted is None
    warm_up_backend("plain", settings)
    assert fork_server._prestarted is not None


def test_preloading_into_a_server_that_died_is_no_error() -> None:
    server = fork_server.ForkServer()
    try:
        assert server.wait_ready()
        server._process.kill()
        server._process.wait(timeout=10)
        server.import_libraries(["json"])  # the pipe is broken: nothing to do, no exception
        assert not server.wait_ready(timeout=0.1)  # steps then start as plain processes
    finally:
        server.close()
