"""Status error bodies as the official client parses them: 401, 403 (RBAC from rbac.json),
404, 409 Conflict, 422 Invalid with causes, 400 strict decoding."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kubefake.conftest import NAMESPACE, job_body, state_dir

pytestmark = pytest.mark.integration


def _status(exc: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == exc.status
    return body


def test_an_unknown_token_is_401_unauthorized(kube_cluster: dict[str, str], tmp_path: Path) -> None:
    import yaml
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    stale = yaml.safe_load(Path(kube_cluster["KUBECONFIG"]).read_text())
    stale["users"][0]["user"]["token"] = "not-the-token"
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(stale))
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"), context="fake")
    with api, pytest.raises(ApiException) as raised:
        client.CoreV1Api(api).list_namespaced_pod(NAMESPACE)
    assert (raised.value.status, raised.value.reason) == (401, "Unauthorized")
    assert _status(raised.value)["reason"] == "Unauthorized"


def test_the_restricted_context_gets_403_with_the_rbac_message(
    kube_cluster: dict[str, str],
) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    rules = Path(state_dir(kube_cluster)) / "rbac.json"
    user = "system:serviceaccount:mlyard:restricted"
    rules.write_text(
        json.dumps(
            {
                user: [
                    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}
                ]
            }
        )
    )
    api = config.new_client_from_config(
        config_file=kube_cluster["KUBECONFIG"], context="fake-restricted"
    )
    try:
        client.CoreV1Api(api).list_namespaced_pod(NAMESPACE)
        with pytest.raises(ApiException) as raised:
            client.BatchV1Api(api).create_namespaced_job(NAMESPACE, job_body("x", ["true"]))
        assert (raised.value.status, raised.value.reason) == (403, "Forbidden")
        status = _status(raised.value)
        assert status["reason"] == "Forbidden"
        assert status["message"] == (
            f'jobs.batch is forbidden: User "{user}" cannot create resource "jobs" in API group '
            f'"batch" in the namespace "{NAMESPACE}"'
        )
        with pytest.raises(ApiException) as raised:
            client.CoreV1Api(api).list_node()
        assert _status(raised.value)["message"] == (
            f'nodes is forbidden: User "{user}" cannot list resource "nodes" in API group "" at '
            "the cluster scope"
        )
        time.sleep(0.01)  # a new mtime: the rules are read again
        rules.write_text(
            json.dumps({user: [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]})
        )
        assert client.CoreV1Api(api).list_node().items
    finally:
        rules.unlink()
        api.close()


def test_a_missing_object_is_404_not_found(batch: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        batch.read_namespaced_job("no-such-job", NAMESPACE)
    assert (raised.value.status, raised.value.reason) == (404, "Not Found")
    status = _status(raised.value)
    assert (status["reason"], status["message"]) == (
        "NotFound",
        'jobs.batch "no-such-job" not found',
    )


def test_creating_in_a_missing_namespace_is_404(batch: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        batch.create_namespaced_job("nowhere", job_body("j", ["true"]))
    status = _status(raised.value)
    assert (status["code"], status["message"]) == (404, 'namespaces "nowhere" not found')


def test_an_invalid_name_is_422_invalid_with_causes(batch: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        batch.create_namespaced_job(NAMESPACE, job_body("Bad_Name", ["true"]))
    assert raised.value.status == 422
    status = _status(raised.value)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith(
        'Job.batch "Bad_Name" is invalid: metadata.name: Invalid '
        'value: "Bad_Name": a lowercase RFC 1123 label'
    )
    (cause,) = status["details"]["causes"]
    assert (cause["reason"], cause["field"]) == ("FieldValueInvalid", "metadata.name")


def test_the_schema_is_enforced(batch: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    body = job_body("schema", ["true"])
    body["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as raised:
        batch.create_namespaced_job(NAMESPACE, body)
    (cause,) = _status(raised.value)["details"]["causes"]
    assert cause == {
        "reason": "FieldValueNotSupported",
        "field": "spec.template.spec.restartPolicy",
        "message": 'Unsupported value: "Always": supported values: "OnFailure", "Never"',
    }


def test_replacing_with_a_stale_resource_version_is_409_conflict(core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    name = f"cm-{uuid.uuid4().hex[:6]}"
    created = core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": name}, "data": {"a": "1"}}
    )
    created.data = {"a": "2"}
    core.replace_namespaced_config_map(name, NAMESPACE, created)
    created.data = {"a": "3"}
    with pytest.raises(ApiException) as raised:
        core.replace_namespaced_config_map(name, NAMESPACE, created)
    status = _status(raised.value)
    assert (status["code"], status["reason"]) == (409, "Conflict")
    assert status["message"] == (
        f'Operation cannot be fulfilled on configmaps "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert core.read_namespaced_config_map(name, NAMESPACE).data == {"a": "2"}


def test_immutable_fields_are_refused_on_update(batch: Any, core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    name = f"fixed-{uuid.uuid4().hex[:6]}"
    batch.create_namespaced_job(NAMESPACE, job_body(name, ["python", "-c", "pass"]))
    with pytest.raises(ApiException) as raised:
        batch.patch_namespaced_job(
            name,
            NAMESPACE,
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "main", "command": ["python", "-c", "print(2)"]}
                            ]
                        }
                    }
                }
            },
        )
    status = _status(raised.value)
    assert status["code"] == 422
    assert status["details"]["causes"][0]["field"] == "spec.template"
    assert status["message"].endswith("field is immutable")
    batch.patch_namespaced_job(name, NAMESPACE, {"metadata": {"labels": {"team": "ml"}}})
    assert batch.read_namespaced_job(name, NAMESPACE).metadata.labels == {"team": "ml"}


def test_a_fraction_of_an_extended_resource_is_422(core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    from tests.integration.kubefake.conftest import pod_body

    body = pod_body("half-gpu", ["true"], resources={"limits": {"nvidia.com/gpu": "500m"}})
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod(NAMESPACE, body)
    causes = _status(raised.value)["details"]["causes"]
    assert {
        "reason": "FieldValueInvalid",
        "field": "spec.containers[0].resources.limits[nvidia.com/gpu]",
        "message": 'Invalid value: "500m": must be an integer',
    } in causes
