"""``GET pods/<name>/log``: container choice, ``previous``, ``tailLines``, ``limitBytes`` and
``follow``, with the API server's errors for a container that has not started."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import PlainTextResponse, Response, StreamingResponse

from tests.kubefake import streams
from tests.kubefake.errors import bad_request
from tests.kubefake.resources import BY_KIND

if TYPE_CHECKING:
    from tests.kubefake.api import Target
    from tests.kubefake.cluster import Cluster

_POD = BY_KIND["Pod"]


class LogEndpoint:
    """Serves container logs from the files the kubelet's processes write."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def serve(self, target: Target, query: Any) -> Response:
        store, kubelet = self.cluster.store, self.cluster.kubelet
        namespace, name = target.namespace or "", target.name or ""
        pod = store.get(_POD, namespace, name)
        spec = pod["spec"]
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        container = query.get("container")
        if not container:
            if len(names) != 1:
                choices = " ".join(names)
                message = (
                    f"a container name must be specified for pod {name}, choose one of: [{choices}]"
                )
                if init_names:
                    message += f" or one of the init containers: [{' '.join(init_names)}]"
                raise bad_request(message)
            container = names[0]
        if container not in names + init_names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        previous = streams.parse_bool(query.get("previous", "false"))
        statuses = (pod.get("status", {}).get("containerStatuses") or []) + (
            pod.get("status", {}).get("initContainerStatuses") or []
        )
        status = next((s for s in statuses if s["name"] == container), None)
        uid = pod["metadata"]["uid"]
        path = kubelet.log_path(uid, container, previous)
        if previous and (path is None or not path.exists()):
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        if path is None or not path.exists():
            waiting = (status or {}).get("state", {}).get("waiting") or {}
            reason = waiting.get("reason", "ContainerCreating")
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        limit = int(query["limitBytes"]) if query.get("limitBytes") else None
        if streams.parse_bool(query.get("follow", "false")) and not previous:

            def alive() -> bool:
                return store.find(_POD, namespace, name) is not None

            return StreamingResponse(
                streams.follow_log(kubelet, alive, uid, container, path, tail),
                media_type="text/plain",
            )
        return PlainTextResponse(streams.read_log(path, tail, limit))
