"""Fetching the objects a message names, concurrently, from the artifact store or S3."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from mlyard.artifacts.store import KEY_PATTERN, ArtifactStore, s3_filesystem
from mlyard.errors import ArtifactError, BackendError
from mlyard.settings import Settings


class ObjectMissingError(LookupError):
    """A message names an object that does not exist: dead-lettered, never retried."""


class ObjectStoreUnavailableError(BackendError):
    """The object store cannot be reached: no message's fault, so none is dead-lettered or
    charged an attempt; the worker waits for the store as it does for its broker."""


@contextmanager
def _outage_when_unreachable(store: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if _unreachable(exc):
            raise ObjectStoreUnavailableError(
                f"The object store {store} cannot be reached: {exc}"
            ) from exc
        raise


def _unreachable(exc: BaseException | None) -> bool:
    """No connection could be made, here or as the cause of a wrapped error.

    Only a failure to connect: a read that times out or breaks off is charged to its message
    like any other retryable failure, so that one object too slow to read ends in the dead
    letters instead of holding back every batch it is in.
    """
    botocore = sys.modules.get("botocore.exceptions")  # only ever loaded with s3fs
    network: tuple[type[BaseException], ...] = (ConnectionRefusedError,)
    if botocore is not None:  # refused, unresolvable, connect timeout, proxy, TLS
        network += (botocore.ConnectionError,)
    while exc is not None:
        if isinstance(exc, network):
            return True
        exc = exc.__cause__
    return False


class ObjectFetcher:
    """Reads ``sha256:`` digests and keys of the artifact store, and ``s3://`` URIs."""

    def __init__(self, settings: Settings, concurrency: int = 16) -> None:
        self.settings = settings
        self.store = ArtifactStore.from_settings(settings)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch")
        self._local_root = self.store.url
        self._s3: Any = None
        self._s3_lock = threading.Lock()

    def check_reachable(self) -> None:
        self.store.check_reachable()

    def fetch_all(self, keys: Sequence[str]) -> list[bytes | Exception]:
        """Each object's bytes, or the error that fetching it raised, in order.

        Remote objects are fetched concurrently; a local store is read in this thread, since
        a local read is shorter than handing it to a thread and back.
        """
        results: list[bytes | Exception] = []
        if self.store.is_local and not any(key.startswith("s3://") for key in keys):
            for key in keys:
                try:
                    if key.startswith("sha256:"):
                        results.append(self.fetch(key))
                    else:
                        results.append(self._read_local_key(key))
                except Exception as exc:
                    results.append(exc)
            return results
        futures = [self._pool.submit(self.fetch, key) for key in keys]
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                results.append(exc)
        return results

    def fetch(self, key: str) -> bytes:
        """One object's bytes; ``ObjectMissingError`` when it does not exist,
        ``ObjectStoreUnavailableError`` when its store cannot be reached."""
        if key.startswith("s3://"):
            with _outage_when_unreachable("s3://" + key.split("/", 3)[2]):
                return self._fetch_s3(key)
        if key.startswith("sha256:"):
            try:
                with _outage_when_unreachable(self.store.url):
                    return self.store.get_bytes(key)
            except ArtifactError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
                    raise  # a read that failed: retried like any other failure
                raise ObjectMissingError(f"object {key} is not in the artifact store") from exc
        if self.store.is_local:
            return self._read_local_key(key)
        try:
            with _outage_when_unreachable(self.store.url):
                return self.store.read_key(key)
        except FileNotFoundError as exc:
            raise ObjectMissingError(f"object {key!r} is not in the artifact store") from exc
        except ArtifactError as exc:  # a key that would leave the store: never retried
            raise ObjectMissingError(exc.message) from exc

    def _read_local_key(self, key: str) -> bytes:
        # The store's own key rule, then a plain read: fsspec's local open costs 5x a read,
        # and a buffered file object twice these system calls.
        if not KEY_PATTERN.fullmatch(key):
            raise ObjectMissingError(
                f"{key!r} is not a valid object key (relative, parts of letters, digits, ._-)."
            )
        try:
            descriptor = os.open(f"{self._local_root}/{key}", os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectMissingError(f"object {key!r} is not in the artifact store") from exc
        try:
            return _read_all(descriptor)
        except IsADirectoryError as exc:
            raise ObjectMissingError(f"object {key!r} is not in the artifact store") from exc
        finally:
            os.close(descriptor)

    def _fetch_s3(self, uri: str) -> bytes:
        with self._s3_lock:  # one client for all fetch threads
            if self._s3 is None:
                # The artifact store's settings: its endpoint, region and short timeouts.
                storage = self.settings.storage
                self._s3 = s3_filesystem(uri, storage.endpoint_url, storage.region)
        try:
            return bytes(self._s3.cat_file(uri.removeprefix("s3://")))
        except FileNotFoundError as exc:
            raise ObjectMissingError(f"object {uri} does not exist") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_FIRST_READ_BYTES = 1 << 16


def _read_all(descriptor: int) -> bytes:
    """The whole file, until end of file: one read and the empty one for a small object."""
    first = os.read(descriptor, _FIRST_READ_BYTES)
    more = os.read(descriptor, _FIRST_READ_BYTES) if first else b""
    if not more:
        return first
    # A large object: the rest in as few reads as possible.
    chunks = [first, more]
    size = max(_FIRST_READ_BYTES, os.fstat(descriptor).st_size)
    while chunk := os.read(descriptor, size):
        chunks.append(chunk)
    return b"".join(chunks)
