"""Reading the objects messages name from the local artifact store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlyard.consumers.fetch import ObjectFetcher, ObjectMissingError, ObjectStoreUnavailableError
from mlyard.errors import ArtifactError
from mlyard.settings import load_settings


@pytest.fixture
def fetcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectFetcher:
    monkeypatch.setenv("MLYARD_HOME", str(tmp_path / "home"))
    return ObjectFetcher(load_settings())


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 3 * 65_536 + 5])
def test_an_object_is_read_whole_whatever_its_size(fetcher: ObjectFetcher, size: int) -> None:
    content = os.urandom(size)
    fetcher.store.write_key("frames/one.bin", content)
    assert fetcher.fetch_all(["frames/one.bin"]) == [content]


def test_missing_and_invalid_keys_are_errors_in_place(fetcher: ObjectFetcher) -> None:
    fetcher.store.write_key("a.bin", b"a")
    results = fetcher.fetch_all(["a.bin", "nope.bin", "../etc/passwd", "a.bin"])
    assert results[0] == results[3] == b"a"
    assert isinstance(results[1], ObjectMissingError) and "not in the artifact store" in str(
        results[1]
    )
    assert isinstance(results[2], ObjectMissingError) and "not a valid object key" in str(
        results[2]
    )


def _artifact_error_from(cause: Exception) -> ArtifactError:
    try:
        raise ArtifactError("Reading failed") from cause
    except ArtifactError as exc:
        return exc


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (ConnectionRefusedError("refused"), ObjectStoreUnavailableError),
        (FileNotFoundError("gone"), ObjectMissingError),
        # A read that breaks off is the message's retry, not an outage.
        (ConnectionResetError("reset"), ArtifactError),
    ],
)
def test_a_store_that_refuses_connections_is_an_outage_not_a_missing_object(
    fetcher: ObjectFetcher,
    monkeypatch: pytest.MonkeyPatch,
    cause: Exception,
    expected: type[Exception],
) -> None:
    def get_bytes(digest: str) -> bytes:
        raise _artifact_error_from(cause)

    monkeypatch.setattr(fetcher.store, "get_bytes", get_bytes)
    [result] = fetcher.fetch_all(["sha256:" + "0" * 64])
    assert type(result) is expected
