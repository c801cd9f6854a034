"""An attempt's log: from its first pod while the pod exists (followed with ``follow``), else
the ``log.txt`` the runtime stored (``--store-log``), so ``mlyard runs logs`` still works after
the Job and its pods were removed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.kubernetes.api import ClusterApi, Manifest
from mlyard.backends.kubernetes.names import ATTEMPT_ID_LABEL, backend_selector, label_value
from mlyard.errors import BackendError
from mlyard.runtime.stored_log import LOG_DOCUMENT

#: How often a follower looks again for a container that has not started.
LOG_RETRY_SECONDS = 0.5


def attempt_log_lines(
    api: ClusterApi,
    store: ArtifactStore,
    backend_name: str,
    attempt_id: str,
    *,
    follow: bool,
    ended: Callable[[], bool],
) -> Iterator[str]:
    """The lines of the attempt's output. With ``follow``, waits for its container to start
    while ``ended()`` says the attempt has not ended, then streams until the container ends."""
    selector = f"{backend_selector(backend_name)},{ATTEMPT_ID_LABEL}={label_value(attempt_id)}"
    while True:
        pods = api.list_objects("Pod", selector)
        started = [p for p in pods if _container_started(p)]
        if started:
            first = min(started, key=_pod_index)
            shown = 0
            try:
                for line in _lines(api.pod_log(first["metadata"]["name"], follow=follow)):
                    shown += 1
                    yield line
            except BackendError:
                if shown:
                    raise
                break  # the pod went between the list and the read: the stored log
            return
        if not pods or not follow:
            break
        if ended():  # it ended before any container started: no container will
            break
        time.sleep(LOG_RETRY_SECONDS)  # the container has not started yet
    stored = store.read_document(attempt_id, LOG_DOCUMENT) if attempt_id else None
    if stored is not None:
        yield from stored.decode(errors="replace").splitlines()


def _container_started(pod: Manifest) -> bool:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        state = container.get("state") or {}
        if "running" in state or "terminated" in state:
            return True
    return False


def _pod_index(pod: Manifest) -> tuple[int, str]:
    annotations = pod["metadata"].get("annotations") or {}
    index = annotations.get("batch.kubernetes.io/job-completion-index", "0")
    return (int(index) if index.isdigit() else 0, pod["metadata"].get("name", ""))


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")
