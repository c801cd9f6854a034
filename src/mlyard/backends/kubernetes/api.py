"""The boundary to the Kubernetes API: the official client configured from the profile, calls
answered as plain JSON (as the API sends it), and every client or urllib3 error translated
into an ``MlyardError`` that names the problem and the fix. Nothing else in mlyard imports the
``kubernetes`` package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlyard.backends.kubernetes.profile import KubernetesProfile
from mlyard.errors import BackendError, ConfigError, MlyardError

Manifest = dict[str, Any]

#: Where each kind lives: (API group, version, plural).
KINDS: dict[str, tuple[str, str, str]] = {
    "Job": ("batch", "v1", "jobs"),
    "Pod": ("", "v1", "pods"),
    "Service": ("", "v1", "services"),
    "Deployment": ("apps", "v1", "deployments"),
    "Secret": ("", "v1", "secrets"),
    "ResourceClaimTemplate": ("resource.k8s.io", "v1", "resourceclaimtemplates"),
    "Node": ("", "v1", "nodes"),
}


def role_rule(verb: str, plural: str) -> str:
    """The RBAC rule that grants ``verb`` on ``plural``, as YAML for a Role."""
    group = next((g for g, _, p in KINDS.values() if p == plural.split("/")[0]), "")
    return (
        f'- apiGroups: ["{group}"]\n  resources: ["{plural}"]\n'
        '  verbs: ["get", "list", "watch", "create", "delete", "patch"]'
        if verb != "list nodes"
        else '- apiGroups: [""]\n  resources: ["nodes"]\n  verbs: ["list"]'
    )


class ClusterApi:
    """The calls the backend makes, over one connection pool."""

    def __init__(self, backend_name: str, profile: KubernetesProfile) -> None:
        self.backend_name = backend_name
        self.profile = profile
        self.namespace = profile.namespace
        self._client = _api_client(backend_name, profile)
        self.server: str = self._client.configuration.host
        #: Requests sent, for the benchmark (status must cost the same for 1 or 50 steps).
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    # --- the one place requests are made --------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        resource: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON body (the raw response with ``stream``)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self.requests += 1
        params = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                *params,
                _request_timeout=None if stream else (timeout or self.profile.request_timeout),
            )
            if not 200 <= response.status <= 299:
                response.read()
                raise ApiException(http_resp=response)
            if stream:
                return response.response
            response.read()
            return json.loads(response.data) if response.data else {}
        except ApiException as exc:
            raise self.translate(exc, verb=verb, resource=resource) from exc
        except HTTPError as exc:
            raise BackendError(
                f"The Kubernetes API server at {self.server} cannot be reached: {exc}",
                hint="Check that the cluster is up and that the kubeconfig's server address is "
                "right (`kubectl cluster-info`).",
            ) from exc

    def translate(self, exc: Any, *, verb: str, resource: str) -> MlyardError:
        """An ``ApiException`` as an error people can act on."""
        status = getattr(exc, "status", None)
        body: dict[str, Any] = {}
        try:
            body = json.loads(exc.body or "{}")
        except (TypeError, ValueError):
            body = {}
        message = body.get("message") or getattr(exc, "reason", "") or str(exc)
        where = f"namespace {self.namespace!r}"
        if status == 401:
            return BackendError(
                f"The Kubernetes API server at {self.server} rejected mlyard's credentials "
                f"(401) when it tried to {verb} {resource}.",
                hint="Refresh the kubeconfig's credentials (log in to the cluster again) or "
                "fix the service account token.",
            )
        if status == 403:
            return BackendError(
                f"Kubernetes forbids mlyard to {verb} {resource} in {where} (403): {message}",
                hint="Grant the user or service account a Role with this rule (and bind it "
                f"with a RoleBinding in {self.namespace}):\n{role_rule(verb, resource)}",
            )
        details = body.get("details") or {}
        if status == 404 and details.get("kind") == "namespaces":
            return ConfigError(
                f"The namespace {self.namespace!r} does not exist on {self.server}.",
                hint=f"Create it (`kubectl create namespace {self.namespace}`) or set namespace "
                f"in [backends.{self.backend_name}].",
            )
        if status == 422:
            return BackendError(
                f"Kubernetes refused the {resource} mlyard sent (422 Invalid): {message}",
                hint="This is a bug in mlyard's manifests or a profile value the API does not "
                "accept (node_selector, tolerations, names); `mlyard run --dry-run` shows them.",
            )
        return BackendError(
            f"Kubernetes answered {status} when mlyard tried to {verb} {resource}: {message}",
            hint=f"Check the cluster's state with `kubectl -n {self.namespace} get {resource}`.",
        )

    # --- the calls --------------------------------------------------------------------------

    def _collection(self, kind: str, namespaced: bool = True) -> str:
        group, version, plural = KINDS[kind]
        root = f"/apis/{group}/{version}" if group else f"/api/{version}"
        return f"{root}/namespaces/{self.namespace}/{plural}" if namespaced else f"{root}/{plural}"

    def create(self, manifest: Manifest) -> tuple[Manifest, bool]:
        """Create the object; an object of that name that exists already is adopted (409
        AlreadyExists is the idempotence of submit). Returns (object, created)."""
        from kubernetes.client.exceptions import ApiException

        kind = manifest["kind"]
        plural = KINDS[kind][2]
        try:
            return (
                self.call(
                    "POST", self._collection(kind), verb="create", resource=plural, body=manifest
                ),
                True,
            )
        except BackendError as error:
            cause = error.__cause__
            if not isinstance(cause, ApiException) or cause.status != 409:
                raise
        name = manifest["metadata"]["name"]
        return self.get(kind, name) or manifest, False

    def get(self, kind: str, name: str) -> Manifest | None:
        """The object, or ``None`` when there is none of that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            found: Manifest = self.call(
                "GET", f"{self._collection(kind)}/{name}", verb="get", resource=KINDS[kind][2]
            )
        except MlyardError as error:
            cause = error.__cause__
            if isinstance(cause, ApiException) and cause.status == 404:
                details = json.loads(cause.body or "{}").get("details") or {}
                if details.get("kind") != "namespaces":
                    return None
            raise
        return found

    def list_objects(self, kind: str, selector: str) -> list[Manifest]:
        """Every object of ``kind`` in the namespace matching the label selector: one request."""
        answer = self.call(
            "GET",
            self._collection(kind),
            verb="list",
            resource=KINDS[kind][2],
            query={"labelSelector": selector},
        )
        items: list[Manifest] = answer.get("items") or []
        return items

    def list_nodes(self) -> list[Manifest] | None:
        """The cluster's nodes, or ``None`` when RBAC does not let mlyard list them."""
        try:
            path = self._collection("Node", namespaced=False)
            answer = self.call("GET", path, verb="list nodes", resource="nodes")
        except BackendError as error:
            if getattr(error.__cause__, "status", None) == 403:
                return None
            raise
        items: list[Manifest] = answer.get("items") or []
        return items

    def patch_annotations(self, kind: str, name: str, annotations: dict[str, str]) -> None:
        """Merge-patch annotations onto an object; a missing object is left alone."""
        from kubernetes.client.exceptions import ApiException

        path = f"{self._collection(kind)}/{name}"
        params = {"metadata": {"annotations": annotations}}
        try:
            self._patch(path, params, resource=KINDS[kind][2])
        except MlyardError as error:
            if not (isinstance(error.__cause__, ApiException) and error.__cause__.status == 404):
                raise

    def merge_patch(
        self, kind: str, name: str, body: Manifest, *, subresource: str | None = None
    ) -> None:
        """Merge-patch an object (or its ``scale`` subresource); a missing one is an error."""
        path = f"{self._collection(kind)}/{name}" + (f"/{subresource}" if subresource else "")
        plural = KINDS[kind][2] + (f"/{subresource}" if subresource else "")
        self._patch(path, body, resource=plural)

    def replace(self, manifest: Manifest, resource_version: str) -> Manifest:
        """Replace an object with ``manifest`` (PUT), as of ``resource_version``."""
        kind = manifest["kind"]
        body = {
            **manifest,
            "metadata": {**manifest["metadata"], "resourceVersion": resource_version},
        }
        replaced: Manifest = self.call(
            "PUT",
            f"{self._collection(kind)}/{manifest['metadata']['name']}",
            verb="update",
            resource=KINDS[kind][2],
            body=body,
        )
        return replaced

    def _patch(self, path: str, body: Manifest, *, resource: str) -> None:
        from kubernetes.client.exceptions import ApiException

        self.requests += 1
        params = self._client.param_serialize(
            method="PATCH",
            resource_path=path,
            header_params={
                "Accept": "application/json",
                "Content-Type": "application/merge-patch+json",
            },
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*params, _request_timeout=self.profile.request_timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise self.translate(
                ApiException(http_resp=response), verb="patch", resource=resource
            ) from ApiException(http_resp=response)

    def delete(self, kind: str, name: str, *, policy: str = "Background") -> None:
        """Delete the object and what it owns (a Job's pods); a missing object is already
        deleted. ``Foreground`` keeps the object visible until its pods are gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.call(
                "DELETE",
                f"{self._collection(kind)}/{name}",
                verb="delete",
                resource=KINDS[kind][2],
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy},
            )
        except MlyardError as error:
            if not (isinstance(error.__cause__, ApiException) and error.__cause__.status == 404):
                raise

    def pod_log(self, name: str, *, follow: bool) -> Iterator[bytes]:
        """The pod's log, as it arrives when following."""
        response = self.call(
            "GET",
            f"{self._collection('Pod')}/{name}/log",
            verb="get",
            resource="pods/log",
            query={"follow": "true" if follow else None},
            stream=True,
        )
        try:
            yield from response.stream(4096, decode_content=True)
        finally:
            response.release_conn()


def _api_client(backend_name: str, profile: KubernetesProfile) -> Any:
    """An ``ApiClient`` for the profile's cluster: in-cluster, or a kubeconfig file and context.
    A missing file or an unknown context is a ``ConfigError`` listing what there is."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    if profile.in_cluster:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise ConfigError(
                f"Backend {backend_name!r} has in_cluster = true, but mlyard is not running in "
                f"a pod with a service account: {exc}",
                hint="Run mlyard inside the cluster, or set kubeconfig (and context) instead.",
            ) from exc
    else:
        path = _kubeconfig_path(profile)
        if not path.is_file():
            raise ConfigError(
                f"Backend {backend_name!r} needs a kubeconfig, and {path} does not exist.",
                hint=f"Set kubeconfig in [backends.{backend_name}] or $KUBECONFIG to the "
                "cluster's kubeconfig file (kind, minikube and MicroK8s write one: see README), "
                "or set in_cluster = true when mlyard runs in a pod.",
            )
        try:
            contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=str(path)
            )
        except ConfigException as exc:
            raise ConfigError(
                f"The kubeconfig {path} cannot be read: {exc}",
                hint="Check the file (`kubectl config view --kubeconfig FILE`).",
            ) from exc
        names = [c["name"] for c in contexts or []]
        if profile.context is not None and profile.context not in names:
            raise ConfigError(
                f"The kubeconfig {path} has no context {profile.context!r}.",
                hint=f"Its contexts: {', '.join(names) or 'none'}. Set context in "
                f"[backends.{backend_name}] to one of them.",
            )
        if profile.context is None and not current:
            raise ConfigError(
                f"The kubeconfig {path} has no current context.",
                hint=f"Set context in [backends.{backend_name}] to one of: "
                f"{', '.join(names) or 'none'}.",
            )
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=profile.context, client_configuration=configuration
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise ConfigError(
                f"The kubeconfig {path} (context {profile.context or current['name']!r}) cannot "
                f"be used: {exc}",
                hint="Check its cluster, user and certificate entries "
                "(`kubectl config view --minify`).",
            ) from exc
    configuration.retries = 0  # an unreachable server is reported at once, not after retries
    return client.ApiClient(configuration)


def _kubeconfig_path(profile: KubernetesProfile) -> Path:
    if profile.kubeconfig is not None:
        return profile.kubeconfig.expanduser()
    from_environment = os.environ.get("KUBECONFIG", "")
    if from_environment:
        return Path(from_environment.split(os.pathsep)[0]).expanduser()
    return Path("~/.kube/config").expanduser()
