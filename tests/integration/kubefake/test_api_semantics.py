"""API semantics the backend leans on: selectors, patch types, propagation policies, TTL,
podFailurePolicy, dry runs, DRA objects, namespaces, and stopping the fake with its processes."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kubefake.conftest import NAMESPACE, job_body, pod_body, wait_for
from tests.servicekit import start_service, stop_service

pytestmark = pytest.mark.integration
MEMORY_AT_LEAST_40GI = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_label_and_field_selectors_select_as_on_the_server(core: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    for name, labels in (
        ("a", {"tier": "web", "env": "prod"}),
        ("b", {"tier": "db"}),
        ("c", {"tier": "web"}),
    ):
        core.create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": f"{name}-{tag}", "labels": {**labels, "set": tag}}}
        )

    def names(selector: str, fields: str | None = None) -> list[str]:
        items = core.list_namespaced_config_map(
            NAMESPACE, label_selector=f"set={tag},{selector}", field_selector=fields
        ).items
        return sorted(i.metadata.name.split("-")[0] for i in items)

    assert names("tier==web") == ["a", "c"]
    assert names("tier!=web") == ["b"]
    assert names("tier in (db, cache)") == ["b"]
    assert names("tier notin (db)") == ["a", "c"]
    assert names("env") == ["a"]
    assert names("!env") == ["b", "c"]
    assert names("tier=web", f"metadata.name!=a-{tag}") == ["c"]
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        names("tier=web", "data.x=1")
    assert json.loads(raised.value.body)["message"] == "field label not supported: data.x"


def test_pods_are_selected_by_node_and_phase(core: Any) -> None:
    name = _name("where")
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(
            name,
            ["python", "-c", "pass"],
            pod_spec={"nodeSelector": {"kubernetes.io/hostname": "cpu-node"}},
        ),
    )
    wait_for(
        lambda: (
            core.list_namespaced_pod(
                NAMESPACE,
                field_selector=f"metadata.name={name},spec.nodeName=cpu-node,"
                "status.phase=Succeeded",
            ).items
        ),
        what="the finished pod on cpu-node",
    )
    assert not core.list_namespaced_pod(
        NAMESPACE, field_selector=f"metadata.name={name},spec.nodeName=gpu-small"
    ).items


def test_json_merge_and_strategic_patches(core: Any, apps: Any) -> None:
    name = _name("patched")
    core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": name}, "data": {"a": "1", "b": "2"}}
    )
    patched = core.patch_namespaced_config_map(
        name,
        NAMESPACE,
        [{"op": "replace", "path": "/data/a", "value": "10"}, {"op": "remove", "path": "/data/b"}],
    )
    assert patched.data == {"a": "10"}
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_config_map(
            name, NAMESPACE, [{"op": "test", "path": "/data/a", "value": "nope"}]
        )
    assert raised.value.status == 422


def test_foreground_deletion_waits_for_the_dependents(batch: Any, core: Any) -> None:
    name = _name("fg")
    # the pod ignores SIGTERM: it holds the Job for its 2 s grace period
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    body = job_body(name, ["python", "-c", stubborn])
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 2
    batch.create_namespaced_job(NAMESPACE, body)
    wait_for(
        lambda: (
            core.list_namespaced_pod(
                NAMESPACE, label_selector=f"job-name={name}", field_selector="status.phase=Running"
            ).items
        ),
        what="running",
    )
    pod = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items[0]
    wait_for(
        lambda: core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE),
        what="the SIGTERM handler to be in place",
    )
    batch.delete_namespaced_job(name, NAMESPACE, propagation_policy="Foreground")
    job = batch.read_namespaced_job(name, NAMESPACE)
    assert job.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in job.metadata.finalizers
    wait_for(
        lambda: (
            not batch.list_namespaced_job(NAMESPACE, field_selector=f"metadata.name={name}").items
        ),
        timeout=40,
        what="the Job to go after its pod",
    )
    assert not core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items


def test_ttl_after_finished_deletes_the_job_and_its_pods(batch: Any, core: Any) -> None:
    name = _name("ttl")
    batch.create_namespaced_job(
        NAMESPACE, job_body(name, ["python", "-c", "pass"], ttlSecondsAfterFinished=1)
    )
    wait_for(
        lambda: (
            not batch.list_namespaced_job(NAMESPACE, field_selector=f"metadata.name={name}").items
        ),
        timeout=20,
        what="the TTL controller",
    )
    wait_for(
        lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items,
        what="the pods to go with it",
    )


def test_pod_failure_policy_fails_the_job_on_a_matching_exit_code(batch: Any) -> None:
    name = _name("pfp")
    body = job_body(
        name,
        ["python", "-c", "raise SystemExit(42)"],
        backoffLimit=3,
        podFailurePolicy={
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]},
                }
            ]
        },
    )
    batch.create_namespaced_job(NAMESPACE, body)

    def failed() -> Any:
        conditions = batch.read_namespaced_job(name, NAMESPACE).status.conditions or []
        return next((c for c in conditions if c.type == "Failed"), None)

    condition = wait_for(failed, what="the FailJob rule")
    assert condition.reason == "PodFailurePolicy"
    assert condition.message.startswith("Container main for pod mlyard/")
    assert condition.message.endswith("failed with exit code 42 matching FailJob rule at index 0")
    assert batch.read_namespaced_job(name, NAMESPACE).status.failed == 1


def test_dry_run_validates_without_storing(batch: Any) -> None:
    name = _name("dry")
    created = batch.create_namespaced_job(NAMESPACE, job_body(name, ["true"]), dry_run="All")
    assert created.spec.template.metadata.labels["job-name"] == name
    assert not batch.list_namespaced_job(NAMESPACE, field_selector=f"metadata.name={name}").items


def test_resource_claim_templates_are_stored_and_validated(api_client: Any) -> None:
    name = _name("gpu-claim")
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": "gpu.nvidia.com",
                                "selectors": [{"cel": {"expression": MEMORY_AT_LEAST_40GI}}],
                            },
                        }
                    ]
                }
            }
        },
    }
    path = f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaimtemplates"

    def call(method: str, url: str, payload: Any = None) -> Any:
        return api_client.call_api(
            *api_client.param_serialize(
                method,
                url,
                body=payload,
                auth_settings=["BearerToken"],
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
            )
        )

    created = call("POST", path, body)
    created.read()
    assert json.loads(created.data)["metadata"]["name"] == name
    body["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] = "two"
    body["metadata"]["name"] = _name("bad-claim")
    response = call("POST", path, body)
    response.read()
    assert response.status == 422, response.data
    assert json.loads(response.data)["reason"] == "Invalid"


def test_a_deleted_namespace_takes_its_objects(core: Any) -> None:
    namespace = _name("scratch")
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(
        lambda: core.list_namespaced_service_account(namespace).items,
        what="the default ServiceAccount",
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    core.delete_namespace(namespace)
    wait_for(
        lambda: not core.list_namespace(field_selector=f"metadata.name={namespace}").items,
        what="the namespace to go",
    )
    assert not core.list_namespaced_config_map(namespace).items


def test_stop_kills_the_container_processes(tmp_path: Path) -> None:
    from kubernetes import client, config

    state = tmp_path / "kube"
    env = start_service("kube-fake", state)
    api = config.new_client_from_config(config_file=env["KUBECONFIG"], context="fake")
    try:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(
            "default",
            pod_body(
                "sleeper",
                [
                    "python",
                    "-c",
                    "import os, time; print(os.getpid(), flush=True); time.sleep(300)",
                ],
            ),
        )
        pid = int(wait_for(lambda: _log_or_none(core, "sleeper"), what="the pid"))
        os.kill(pid, 0)
    finally:
        api.close()
        stop_service("kube-fake", state)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the container process outlived kube-fake.sh stop")


def _log_or_none(core: Any, name: str) -> str | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_pod_log(name, "default").strip() or None
    except ApiException:
        return None
