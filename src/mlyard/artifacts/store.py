"""The artifact store: content-addressed objects and per-attempt documents.

Layout under the store's URL (a directory, ``file://`` or ``s3://bucket/prefix``)::

    objects/<hex[:2]>/<hex>          one object per sha256 digest, written once
    tasks/<attempt_id>/<name>        task.json, result.json, log.txt of one attempt

A local directory is read and written with plain file calls (atomic renames); ``s3://`` goes
through fsspec (s3fs). Keys come only from digests and ids, validated here, never from paths
users pass. S3 credentials come from the standard AWS variables and are never stored or logged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlyard.errors import ArtifactError
from mlyard.extras import require_extra

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from mlyard.settings import Settings

# \Z, not $: "$" also matches before a final newline, which no file name may end with.
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
NAME_PATTERN = re.compile(f"^{_NAME}\\Z")
#: An object key: names joined by "/" (so never absolute, never "..", no empty part).
KEY_PATTERN = re.compile(f"{_NAME}(?:/{_NAME})*")
CHUNK_BYTES = 4 * 1024 * 1024
#: Fail fast when an S3 endpoint does not answer, instead of botocore's long retries.
S3_CONNECT_TIMEOUT_SECONDS = 3


def check_digest(digest: str) -> str:
    if not DIGEST_PATTERN.match(digest):
        raise ArtifactError(f"{digest!r} is not an artifact digest (sha256:<64 hex digits>).")
    return digest.removeprefix("sha256:")


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value) or ".." in value:
        raise ArtifactError(f"{what} {value!r} is not a valid key part (letters, digits, ._-).")
    return value


def s3_filesystem(url: str, endpoint_url: str | None, region: str | None) -> Any:
    import fsspec

    client_kwargs: dict[str, Any] = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    if region:
        client_kwargs["region_name"] = region
    options: dict[str, Any] = {
        "client_kwargs": client_kwargs,
        "config_kwargs": {
            "connect_timeout": S3_CONNECT_TIMEOUT_SECONDS,
            "read_timeout": 60,
            "retries": {"max_attempts": 2},
        },
        "skip_instance_cache": True,
    }
    require_extra("s3", needed_by="An s3:// artifact store")
    return fsspec.filesystem("s3", **options)


class ArtifactStore:
    """Content-addressed objects plus per-attempt documents, in a directory or on S3."""

    def __init__(
        self, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.is_local = self.is_local_url(url)
        # A local store is read and written with plain file calls: fsspec's local layer costs
        # more than the I/O itself for the small documents every step reads and writes.
        self._fs: AbstractFileSystem | None = None
        if self.is_local:
            self._root = str(Path(url.removeprefix("file://")).expanduser().resolve())
            self.url = self._root
        else:
            self._fs = s3_filesystem(url, endpoint_url, region)
            self._root = url.removeprefix("s3://").rstrip("/")
            self.url = f"s3://{self._root}"

    @staticmethod
    def is_local_url(url: str) -> bool:
        """Whether a store URL names a local directory (anything but ``s3://``)."""
        return not url.startswith("s3://")

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(
            settings.artifacts_url,
            endpoint_url=settings.storage.endpoint_url,
            region=settings.storage.region,
        )

    @property
    def _remote(self) -> AbstractFileSystem:
        assert self._fs is not None, "local stores use plain file calls"
        return self._fs

    # --- keys ----------------------------------------------------------------------------

    def _object_path(self, digest: str) -> str:
        hexdigest = check_digest(digest)
        return f"{self._root}/objects/{hexdigest[:2]}/{hexdigest}"

    def _document_path(self, attempt_id: str, name: str) -> str:
        check_name(attempt_id, "Attempt id")
        check_name(name, "Document name")
        return f"{self._root}/tasks/{attempt_id}/{name}"

    def document_uri(self, attempt_id: str, name: str) -> str:
        path = self._document_path(attempt_id, name)
        return path if self.is_local else f"s3://{path}"

    # --- reachability --------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Fail fast, saying which URL and how to fix it, when the store cannot be used."""
        if self.is_local:
            try:
                Path(self._root).mkdir(parents=True, exist_ok=True)
                probe = Path(self._root) / ".mlyard-write-check"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise ArtifactError(
                    f"Cannot write to the artifact directory {self._root}: {exc.strerror}.",
                    hint="Set storage.artifacts in mlyard.toml (or MLYARD_STORAGE__ARTIFACTS) to "
                    "a writable directory or an s3:// URL.",
                ) from exc
            return
        bucket = self._root.split("/", 1)[0]
        where = f"the S3 endpoint {self.endpoint_url or 'of AWS'} for {self.url}"
        try:
            self._remote.ls(bucket, refresh=True)
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"The bucket {bucket!r} does not exist at {where}.",
                hint=f"Create it (e.g. `aws s3 mb s3://{bucket}"
                + (f" --endpoint-url {self.endpoint_url}`" if self.endpoint_url else "`")
                + ") or point storage.artifacts at an existing bucket.",
            ) from exc
        except PermissionError as exc:
            raise ArtifactError(
                f"Access to {self.url} was refused by {where}.",
                hint="Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the AWS profile) "
                "in the environment.",
            ) from exc
        except Exception as exc:
            raise ArtifactError(
                f"Could not reach {where}: {_reason(exc)}.",
                hint="Check storage.endpoint_url in mlyard.toml or "
                "MLYARD_STORAGE__ENDPOINT_URL, and that the server is running.",
            ) from exc

    # --- objects -------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return self._exists(self._object_path(digest))

    def _exists(self, path: str) -> bool:
        return Path(path).exists() if self.is_local else bool(self._remote.exists(path))

    def _read(self, path: str) -> bytes:
        """The bytes at ``path``; ``FileNotFoundError`` when there is nothing."""
        if self.is_local:
            return Path(path).read_bytes()
        return bytes(self._remote.cat_file(path))

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` once; returns its digest (identical data is stored once)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self._object_path(digest)
        if not self._exists(path):
            self._write(path, data)
        return digest

    def put_file(self, path: Path) -> str:
        hasher = hashlib.sha256()
        with path.open("rb") as source:
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
        digest = "sha256:" + hasher.hexdigest()
        target = self._object_path(digest)
        if self._exists(target):
            return digest
        try:
            if self.is_local:
                self._atomic_local_copy(path, target)
            else:
                self._remote.put_file(str(path), target)
        except OSError as exc:
            raise ArtifactError(f"Storing {path.name} in {self.url} failed: {exc}") from exc
        return digest

    def get_bytes(self, digest: str) -> bytes:
        path = self._object_path(digest)
        try:
            return self._read(path)
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"Artifact {digest} is missing from {self.url}.",
                hint="It was deleted or the run used another artifact store; run the step "
                "again (e.g. with --no-cache).",
            ) from exc
        except OSError as exc:
            raise ArtifactError(f"Reading {digest} from {self.url} failed: {exc}") from exc

    def get_file(self, digest: str, destination: Path) -> None:
        path = self._object_path(digest)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.is_local:
                shutil.copyfile(path, destination)
            else:
                self._remote.get_file(path, str(destination))
        except FileNotFoundError as exc:
            raise ArtifactError(f"Artifact {digest} is missing from {self.url}.") from exc

    # --- documents -----------------------------------------------------------------------

    def write_document(self, attempt_id: str, name: str, data: bytes) -> str:
        self._write(self._document_path(attempt_id, name), data)
        return self.document_uri(attempt_id, name)

    def read_document(self, attempt_id: str, name: str) -> bytes | None:
        try:
            return self._read(self._document_path(attempt_id, name))
        except FileNotFoundError:
            return None

    # --- named objects (event payloads stored by producers) -----------------------------

    def _key_path(self, key: str) -> str:
        if not KEY_PATTERN.fullmatch(key):
            raise ArtifactError(
                f"{key!r} is not a valid object key (relative, parts of letters, digits, ._-)."
            )
        return f"{self._root}/{key}"

    def write_key(self, key: str, data: bytes) -> str:
        """Store ``data`` under a relative ``key`` (e.g. ``events/cam-7/0001.npy``)."""
        path = self._key_path(key)
        self._write(path, data)
        return path if self.is_local else f"s3://{path}"

    def read_key(self, key: str) -> bytes:
        """The object under ``key``; ``FileNotFoundError`` when there is none."""
        return self._read(self._key_path(key))

    # --- writing -------------------------------------------------------------------------

    def _write(self, path: str, data: bytes) -> None:
        try:
            if self.is_local:
                directory = Path(path).parent
                directory.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
                try:
                    with os.fdopen(handle, "wb") as target:
                        target.write(data)
                    Path(temporary).replace(path)  # readers never see a partial object
                except BaseException:
                    Path(temporary).unlink(missing_ok=True)
                    raise
            else:
                self._remote.pipe_file(path, data)  # one PUT: atomic on S3
        except OSError as exc:
            raise ArtifactError(f"Writing to {self.url} failed: {exc}") from exc

    def _atomic_local_copy(self, source: Path, target: str) -> None:
        directory = Path(target).parent
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        os.close(handle)
        try:
            shutil.copyfile(source, temporary)
            Path(temporary).replace(target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def read_uri(uri: str, *, endpoint_url: str | None = None) -> bytes:
    """One document by full URI (a path, ``file://`` or ``s3://``)."""
    if not uri.startswith("s3://"):
        return _read_local(uri)
    filesystem = s3_filesystem(uri, endpoint_url, None)
    path = uri.removeprefix("s3://")
    try:
        return bytes(filesystem.cat_file(path))
    except FileNotFoundError as exc:
        raise ArtifactError(f"No document at {uri}.") from exc
    except Exception as exc:
        raise ArtifactError(f"Could not read {uri}: {_reason(exc)}.") from exc


def _read_local(uri: str) -> bytes:
    path = Path(uri.removeprefix("file://")).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"No document at {uri}.") from exc
    except OSError as exc:
        raise ArtifactError(f"Could not read {uri}: {exc.strerror or exc}.") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "Could not connect" in text or "Connection refused" in text or "connect" in text.lower():
        return f"connection failed ({text})"
    return text
