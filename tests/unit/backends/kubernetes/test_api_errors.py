"""Client errors become MlyardErrors naming the problem and the fix (api.py, the boundary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlyard.backends.kubernetes.api import ClusterApi
from mlyard.backends.kubernetes.profile import KubernetesProfile
from mlyard.errors import BackendError, ConfigError

SERVER = "https://127.0.0.1:6443"


def kubeconfig(path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": SERVER}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "kind-ml", "context": {"cluster": "c", "user": "u"}},
            {"name": "prod", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "kind-ml",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def api(tmp_path: Path, **fields: object) -> ClusterApi:
    if "kubeconfig" not in fields:
        fields["kubeconfig"] = kubeconfig(tmp_path / "config")
    return ClusterApi("gpu", KubernetesProfile(image="x", namespace="ml", **fields))  # type: ignore[arg-type]


def status_error(code: int, reason: str, message: str, kind: str = "jobs") -> Exception:
    from kubernetes.client.exceptions import ApiException

    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": "ml" if kind == "namespaces" else "x", "kind": kind},
        "code": code,
    }
    return ApiException(status=code, reason=reason, body=json.dumps(body))


def test_the_kubeconfig_context_is_used(tmp_path: Path) -> None:
    assert api(tmp_path, context="prod").server == SERVER


def test_an_unknown_context_lists_the_contexts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        api(tmp_path, context="staging")
    assert "no context 'staging'" in str(caught.value) and "kind-ml, prod" in str(caught.value)


def test_a_missing_kubeconfig_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml does not exist"):
        api(tmp_path, kubeconfig=tmp_path / "absent.yaml")


def test_in_cluster_outside_a_pod_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not running in a pod"):
        ClusterApi("gpu", KubernetesProfile(image="x", in_cluster=True))


def test_forbidden_names_verb_resource_and_the_role_rule(tmp_path: Path) -> None:
    error = api(tmp_path).translate(
        status_error(403, "Forbidden", 'jobs.batch is forbidden: User "sa" cannot create'),
        verb="create",
        resource="jobs",
    )
    text = str(error)
    assert isinstance(error, BackendError)
    assert "forbids mlyard to create jobs in namespace 'ml' (403)" in text
    assert 'apiGroups: ["batch"]' in text and 'resources: ["jobs"]' in text
    assert "RoleBinding" in text


def test_unauthorized_asks_for_fresh_credentials(tmp_path: Path) -> None:
    error = api(tmp_path).translate(
        status_error(401, "Unauthorized", "Unauthorized"), verb="list", resource="pods"
    )
    assert "401" in str(error) and SERVER in str(error) and "credentials" in str(error)


def test_a_missing_namespace_says_how_to_create_it(tmp_path: Path) -> None:
    error = api(tmp_path).translate(
        status_error(404, "NotFound", 'namespaces "ml" not found', kind="namespaces"),
        verb="create",
        resource="jobs",
    )
    assert isinstance(error, ConfigError)
    assert "kubectl create namespace ml" in str(error)


def test_an_invalid_object_shows_the_servers_message(tmp_path: Path) -> None:
    error = api(tmp_path).translate(
        status_error(422, "Invalid", 'Job.batch "x" is invalid: spec.template: Required value'),
        verb="create",
        resource="jobs",
    )
    assert "422" in str(error) and "spec.template: Required value" in str(error)


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "config")
    text = config.read_text().replace(SERVER, "http://127.0.0.1:9")
    config.write_text(text)
    with pytest.raises(BackendError) as caught:
        api(tmp_path, kubeconfig=config).list_objects("Job", "a=b")
    assert "http://127.0.0.1:9 cannot be reached" in str(caught.value)
