"""Watches from a resourceVersion (and 410 Expired past the kept history), selectors, and
kubectl on the fake's kubeconfig."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kubefake.conftest import NAMESPACE, WATCH_HISTORY, wait_for

pytestmark = pytest.mark.integration


def test_a_watch_from_a_resource_version_sees_only_later_changes(core: Any) -> None:
    from kubernetes import watch

    name = f"cm-{uuid.uuid4().hex[:6]}"
    created = core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": name, "labels": {"tier": "a"}}, "data": {"v": "1"}}
    )
    core.patch_namespaced_config_map(name, NAMESPACE, {"data": {"v": "2"}})
    core.patch_namespaced_config_map(name, NAMESPACE, {"metadata": {"labels": {"tier": "b"}}})
    core.delete_namespaced_config_map(name, NAMESPACE)
    events = [
        (e["type"], e["object"].data)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            NAMESPACE,
            label_selector="tier in (a, c)",
            resource_version=created.metadata.resource_version,
            timeout_seconds=1,
        )
    ]
    # the label change takes it out of the selection: a filtered watch sees DELETED
    assert events == [("MODIFIED", {"v": "2"}), ("DELETED", {"v": "2"})]


def test_a_watch_from_before_the_kept_history_is_410_expired(core: Any) -> None:
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    name = f"churn-{uuid.uuid4().hex[:6]}"
    first = core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": name}, "data": {"n": "0"}}
    )
    for n in range(WATCH_HISTORY + 1):
        core.patch_namespaced_config_map(name, NAMESPACE, {"data": {"n": str(n + 1)}})
    with pytest.raises(ApiException) as raised:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map,
            NAMESPACE,
            resource_version=first.metadata.resource_version,
            timeout_seconds=2,
        ):
            pass
    assert raised.value.status == 410
    core.delete_namespaced_config_map(name, NAMESPACE)


def test_bookmarks_carry_the_latest_resource_version(
    kube_cluster: dict[str, str], core: Any
) -> None:
    response = core.list_namespaced_pod(
        NAMESPACE,
        watch=True,
        allow_watch_bookmarks=True,
        resource_version=core.list_namespaced_pod(NAMESPACE).metadata.resource_version,
        timeout_seconds=1,
        _preload_content=False,
    )
    lines = [json.loads(line) for line in response.read().splitlines() if line]
    assert lines[-1]["type"] == "BOOKMARK"
    assert int(lines[-1]["object"]["metadata"]["resourceVersion"]) > 0


def _kubectl(kube_cluster: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", kube_cluster["KUBECONFIG"], "-n", NAMESPACE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_creates_lists_reads_logs_and_deletes(
    kube_cluster: dict[str, str], core: Any, tmp_path: Path
) -> None:
    name = f"kubectl-{uuid.uuid4().hex[:6]}"
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: batch/v1\nkind: Job\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n"
        "      containers:\n      - name: main\n        image: python:3.11-slim\n"
        "        command: [python, -c, \"print('from kubectl')\"]\n"
    )
    # --validate=false: the fake serves no OpenAPI documents (the server validates anyway)
    assert (
        _kubectl(kube_cluster, "create", "--validate=false", "-f", str(manifest)).strip()
        == f"job.batch/{name} created"
    )
    wait_for(
        lambda: (
            core.list_namespaced_pod(
                NAMESPACE,
                label_selector=f"job-name={name}",
                field_selector="status.phase=Succeeded",
            ).items
        ),
        what="the job's pod to succeed",
    )
    listed = json.loads(
        _kubectl(kube_cluster, "get", "pods", "-l", f"job-name={name}", "-o", "json")
    )
    assert listed["kind"] == "List" and len(listed["items"]) == 1
    assert listed["items"][0]["kind"] == "Pod"
    assert _kubectl(kube_cluster, "logs", f"job/{name}") == "from kubectl\n"
    assert _kubectl(kube_cluster, "get", "jobs", name, "-o", "jsonpath={.status.succeeded}") == "1"
    _kubectl(kube_cluster, "delete", "job", name, "--wait=true")
    wait_for(
        lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items,
        what="kubectl's background deletion to take the pod",
    )


def test_the_server_rejects_unknown_fields_that_kubectl_sends(
    kube_cluster: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "pod.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "x"},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "python", "imagePullPolicyy": "Always"}
                    ]
                },
            }
        )
    )
    done = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            kube_cluster["KUBECONFIG"],
            "-n",
            NAMESPACE,
            "create",
            "--validate=false",
            "-f",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        'strict decoding error: unknown field "spec.containers[0].imagePullPolicyy"' in done.stderr
    )
