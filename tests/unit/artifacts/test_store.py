from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore, read_uri
from mlyard.errors import ArtifactError


def test_objects_are_content_addressed_and_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    digest = store.put_bytes(b"hello")
    assert digest.startswith("sha256:")
    assert store.put_bytes(b"hello") == digest
    objects = [p for p in (tmp_path / "a" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1
    assert store.get_bytes(digest) == b"hello"
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 10_000)
    assert store.get_bytes(store.put_file(source)) == b"x" * 10_000


def test_documents_round_trip_and_absent_documents_are_none(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path / 'a'}")
    uri = store.write_document("run1.1.1", "task.json", b"{}")
    assert read_uri(uri) == b"{}"
    assert store.read_document("run1.1.1", "result.json") is None


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "run1\n", f"{'0' * 64}\n"])
def test_keys_never_come_from_paths(tmp_path: Path, bad: str) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    with pytest.raises(ArtifactError):
        store.write_document(bad, "task.json", b"{}")
    with pytest.raises(ArtifactError):
        store.get_bytes(f"sha256:{bad}")


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "a//b", "a/./b", "a/b\n", ""])
def test_object_keys_are_relative_names_joined_by_slashes(tmp_path: Path, bad: str) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    with pytest.raises(ArtifactError):
        store.write_key(bad, b"data")
    store.write_key("events/cam-7/0001.npy", b"data")
    assert store.read_key("events/cam-7/0001.npy") == b"data"


def test_missing_object_is_explained(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    with pytest.raises(ArtifactError, match="missing"):
        store.get_bytes("sha256:" + "0" * 64)


def test_unwritable_directory_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ArtifactError, match="Cannot write to the artifact directory"):
        ArtifactStore(str(blocker / "sub")).check_reachable()
