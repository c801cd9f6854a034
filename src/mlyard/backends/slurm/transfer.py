"""How code and data reach the job and come back: the two data routes of a SLURM profile.

``s3``: the compute nodes read and write the orchestrator's artifact store themselves. The store's
credentials (the standard AWS variables) reach the job through the environment of the ``sbatch``
call: they are sent on the SSH channel's stdin, exported in that one remote shell and passed on
by ``sbatch --export=ALL``. They are never written into the job script, a file on the cluster or
any stored document (SLURM itself keeps a job's environment in its controller's state, readable by
the user and the administrators only).

``sftp``: the compute nodes reach only the cluster's shared file system. Before submission the
code package, the inputs and task.json are uploaded into ``<remote_workdir>/store``, laid out as a
local artifact store (``objects/<hex[:2]>/<hex>``, ``tasks/<attempt_id>/...``); each object once.
When the job has ended, result.json and every object it references are downloaded into the
orchestrator's store before the backend reports the terminal state.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from mlyard.artifacts.store import ArtifactStore, check_digest
from mlyard.backends.slurm.ssh import ClusterShell
from mlyard.errors import BackendError, ConfigError
from mlyard.models.tasks import TaskSpec

TASK_DOCUMENT = "task.json"
RESULT_DOCUMENT = "result.json"
#: The variables that carry S3 credentials to the job (never stored).
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)
_DIGEST_IN_TEXT = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class PreparedTask:
    """What the job script needs to find the task, and what the sbatch call must carry."""

    task_uri: str
    endpoint_url: str | None = None
    #: KEY=VALUE pairs exported only in the shell that runs sbatch (secrets: never stored).
    secret_environment: dict[str, str] = field(default_factory=dict, repr=False)


def digests_in(document: bytes | str) -> set[str]:
    """Every artifact digest a JSON document mentions (outputs, inputs, nested metadata)."""
    text = document.decode(errors="replace") if isinstance(document, bytes) else document
    return set(_DIGEST_IN_TEXT.findall(text))


class S3Route:
    """Compute nodes use the orchestrator's own artifact store."""

    name = "s3"

    def __init__(self, store: ArtifactStore, *, shared_filesystem: bool) -> None:
        if store.is_local and not shared_filesystem:
            raise ConfigError(
                f"The artifact store is the local directory {store.url}, which the cluster's "
                "compute nodes cannot reach.",
                hint="Set storage.artifacts to an s3:// URL the cluster reaches, or set "
                "data_route = 'sftp' in the SLURM profile.",
            )
        self._store = store

    def prepare(self, spec: TaskSpec, task_uri: str) -> PreparedTask:
        secrets = {key: os.environ[key] for key in CREDENTIAL_VARIABLES if os.environ.get(key)}
        return PreparedTask(
            task_uri=task_uri, endpoint_url=self._store.endpoint_url, secret_environment=secrets
        )

    def collect(self, attempt_id: str) -> None:
        """Nothing to move: the job wrote into the orchestrator's store."""


class SftpRoute:
    """Code, inputs and results move over SFTP into a store on the cluster's file system."""

    name = "sftp"

    def __init__(self, store: ArtifactStore, shell: ClusterShell, remote_store: str) -> None:
        self._store = store
        self._shell = shell
        self._remote_store = remote_store
        self._uploaded: set[str] = set()

    def _object_path(self, digest: str) -> str:
        hexdigest = check_digest(digest)
        return f"{self._remote_store}/objects/{hexdigest[:2]}/{hexdigest}"

    def _document_path(self, attempt_id: str, name: str) -> str:
        return f"{self._remote_store}/tasks/{attempt_id}/{name}"

    def prepare(self, spec: TaskSpec, task_uri: str) -> PreparedTask:
        remote_spec = spec.model_copy(update={"artifact_store": self._remote_store})
        document = remote_spec.model_dump_json().encode()
        wanted = {spec.code.digest} | digests_in(document)
        self._upload_objects(sorted(wanted - self._uploaded), self.task_directory(spec.attempt_id))
        path = self._document_path(spec.attempt_id, TASK_DOCUMENT)
        self._shell.write_file(path, document)
        return PreparedTask(task_uri=path)

    def _upload_objects(self, digests: list[str], task_directory: str) -> None:
        """Create the directories and upload the objects the cluster lacks, in one listing."""
        directories = {f"{self._remote_store}/objects/{check_digest(d)[:2]}" for d in digests}
        directories.add(task_directory)
        paths = " ".join(shlex.quote(self._object_path(d)) for d in digests)
        listing = self._shell.run(
            f"mkdir -p {' '.join(shlex.quote(d) for d in sorted(directories))} && "
            f'for f in {paths}; do [ -f "$f" ] && echo "$f"; done; true'
        )
        if not listing.ok:
            raise BackendError(
                f"Could not prepare the remote store {self._remote_store}: {listing.output}",
                hint="Check remote_workdir in the SLURM profile: it must be writable.",
            )
        present = set(listing.stdout.split())
        for digest in digests:
            path = self._object_path(digest)
            if path not in present:
                self._shell.write_file(path, self._store.get_bytes(digest))
            self._uploaded.add(digest)

    def task_directory(self, attempt_id: str) -> str:
        return f"{self._remote_store}/tasks/{attempt_id}"

    def collect(self, attempt_id: str) -> None:
        """Download result.json and the objects it references, objects first, so that the
        orchestrator never sees a result whose outputs are missing."""
        result = self._shell.read_file(self._document_path(attempt_id, RESULT_DOCUMENT))
        if result is None:
            return  # the job ended without a result: its SLURM state tells why
        for digest in sorted(digests_in(result)):
            if self._store.exists(digest):
                continue
            data = self._shell.read_file(self._object_path(digest))
            if data is None:
                raise BackendError(
                    f"The result of attempt {attempt_id} names {digest}, which is missing "
                    f"from {self._remote_store} on the cluster."
                )
            stored = self._store.put_bytes(data)
            if stored != digest:
                raise BackendError(f"Object {digest} changed on its way from the cluster.")
            self._uploaded.add(digest)
        self._store.write_document(attempt_id, RESULT_DOCUMENT, result)


def redact(text: str, secrets: dict[str, str]) -> str:
    """``text`` with every secret value replaced, for error messages."""
    for value in secrets.values():
        if value:
            text = text.replace(value, "***")
    return text


def secret_exports(secrets: dict[str, str]) -> tuple[str, str]:
    """The shell that reads the secrets from stdin, and the stdin that carries them."""
    reads = " ".join(f"IFS= read -r {key} && export {key} &&" for key in sorted(secrets))
    payload = "".join(f"{secrets[key]}\n" for key in sorted(secrets))
    return reads, payload
