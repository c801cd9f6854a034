"""Pods on the fake: scheduling by allocatable and taints, image pulls, Secret references,
the memory limit, restarts, eviction and a lost node, as the scheduler and kubelet report them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.kubefake.conftest import NAMESPACE, container_state, pod_body, wait_for

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _condition(core: Any, name: str, kind: str) -> Any:
    pod = core.read_namespaced_pod(name, NAMESPACE)
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def _events(core: Any, name: str) -> list[Any]:
    return core.list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.name={name},involvedObject.kind=Pod"
    ).items


def test_a_gpu_pod_no_node_can_hold_is_unschedulable_with_the_schedulers_message(
    core: Any,
) -> None:
    name = _name("gpus")
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(name, ["python", "-c", "pass"], resources={"limits": {"nvidia.com/gpu": "2"}}),
    )
    condition = wait_for(
        lambda: (c := _condition(core, name, "PodScheduled")) and c.status == "False" and c,
        what="Unschedulable",
    )
    expected = (
        "0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 1 Preemption is not "
        "helpful for scheduling, 2 No preemption victims found for incoming pod."
    )
    assert (condition.reason, condition.message) == ("Unschedulable", expected)
    assert core.read_namespaced_pod(name, NAMESPACE).status.phase == "Pending"
    event = wait_for(
        lambda: [e for e in _events(core, name) if e.reason == "FailedScheduling"],
        what="FailedScheduling",
    )[0]
    assert (event.type, event.message, event.source.component) == (
        "Warning",
        expected,
        "default-scheduler",
    )
    core.delete_namespaced_pod(name, NAMESPACE)


def test_a_pod_that_tolerates_the_taint_and_asks_for_the_product_lands_on_that_node(
    core: Any,
) -> None:
    name = _name("a100")
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "In",
                                "values": ["NVIDIA-A100-SXM4-80GB"],
                            },
                            {"key": "nvidia.com/gpu.count", "operator": "Gt", "values": ["2"]},
                        ]
                    }
                ]
            }
        }
    }
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(
            name,
            ["python", "-c", "import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'])"],
            resources={"limits": {"nvidia.com/gpu": "2"}},
            pod_spec={
                "affinity": affinity,
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            },
        ),
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Succeeded",
        what="success",
    )
    pod = core.read_namespaced_pod(name, NAMESPACE)
    assert pod.spec.node_name == "gpu-a100"
    assert core.read_namespaced_pod_log(name, NAMESPACE) == "0,1\n"
    reasons = {e.reason for e in _events(core, name)}
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= reasons


def test_a_mig_slice_request_goes_to_the_node_that_has_the_profile(core: Any) -> None:
    name = _name("mig")
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(
            name, ["python", "-c", "pass"], resources={"limits": {"nvidia.com/mig-1g.10gb": "1"}}
        ),
    )
    wait_for(lambda: core.read_namespaced_pod(name, NAMESPACE).spec.node_name, what="binding")
    assert core.read_namespaced_pod(name, NAMESPACE).spec.node_name == "gpu-small"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            "registry.invalid/team/trainer:1",
            'failed to pull and unpack image "registry.invalid/team/trainer:1": failed to resolve '
            'reference "registry.invalid/team/trainer:1": failed to do request: Head '
            '"https://registry.invalid/v2/team/trainer/manifests/1": dial tcp: lookup '
            "registry.invalid: no such host",
        ),
        (
            "example.org/team/gone:1",
            "rpc error: code = NotFound desc = failed to pull and unpack image "
            '"example.org/team/gone:1": failed to resolve reference "example.org/team/gone:1": '
            "example.org/team/gone:1: not found",
        ),
    ],
)
def test_an_image_that_cannot_be_pulled_is_err_image_pull_then_back_off(
    core: Any, image: str, message: str
) -> None:
    name = _name("pull")
    core.create_namespaced_pod(NAMESPACE, pod_body(name, ["python", "-c", "pass"], image=image))
    waiting = wait_for(
        lambda: (
            (s := container_state(core, name))
            and s.waiting
            and s.waiting.reason == "ErrImagePull"
            and s.waiting
        ),
        what="ErrImagePull",
    )
    assert waiting.message == message
    waiting = wait_for(
        lambda: (
            (s := container_state(core, name))
            and s.waiting
            and s.waiting.reason == "ImagePullBackOff"
            and s.waiting
        ),
        what="back-off",
    )
    assert waiting.message == f'Back-off pulling image "{image}": ErrImagePull: {message}'
    failed = [e.message for e in _events(core, name) if e.reason == "Failed"]
    assert f'Failed to pull image "{image}": {message}' in failed
    assert core.read_namespaced_pod(name, NAMESPACE).status.phase == "Pending"
    core.delete_namespaced_pod(name, NAMESPACE)


def test_an_invalid_image_reference_is_invalid_image_name(core: Any) -> None:
    name = _name("badref")
    core.create_namespaced_pod(NAMESPACE, pod_body(name, ["true"], image="Not A/Valid::ref"))
    waiting = wait_for(
        lambda: (
            (s := container_state(core, name))
            and s.waiting
            and s.waiting.reason == "InvalidImageName"
            and s.waiting
        ),
        what="InvalidImageName",
    )
    assert waiting.message == (
        'Failed to apply default image tag "Not A/Valid::ref": couldn\'t '
        'parse image name "Not A/Valid::ref": invalid reference format'
    )
    core.delete_namespaced_pod(name, NAMESPACE)


def test_a_missing_secret_is_create_container_config_error_until_it_exists(core: Any) -> None:
    name, secret = _name("secret"), _name("creds")
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(
            name,
            ["python", "-c", "import os; print(os.environ['TOKEN'])"],
            env=[
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
            ],
        ),
    )
    waiting = wait_for(
        lambda: (
            (s := container_state(core, name))
            and s.waiting
            and s.waiting.reason == "CreateContainerConfigError"
            and s.waiting
        ),
        what="CreateContainerConfigError",
    )
    assert waiting.message == f'secret "{secret}" not found'
    core.create_namespaced_secret(
        NAMESPACE, {"metadata": {"name": secret}, "stringData": {"token": "s3cr3t"}}
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Succeeded",
        timeout=30,
        what="the pod to run once the Secret exists",
    )
    assert core.read_namespaced_pod_log(name, NAMESPACE) == "s3cr3t\n"


def test_a_container_over_its_memory_limit_is_oom_killed(core: Any) -> None:
    name = _name("oom")
    script = "import time; block = b'x' * (300 * 1024 * 1024); time.sleep(30)"
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(name, ["python", "-c", script], resources={"limits": {"memory": "100Mi"}}),
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Failed",
        what="the OOM kill",
    )
    terminated = container_state(core, name).terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_on_failure_restarts_the_container_and_counts_restarts(core: Any) -> None:
    name = _name("restart")
    script = (
        "import pathlib, sys; p = pathlib.Path('tries'); n = int(p.read_text()) + 1 "
        "if p.exists() else 1; p.write_text(str(n)); print(n); sys.exit(0 if n == 3 else 1)"
    )
    core.create_namespaced_pod(
        NAMESPACE, pod_body(name, ["python", "-c", script], pod_spec={"restartPolicy": "OnFailure"})
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Succeeded",
        timeout=30,
        what="the third try to succeed",
    )
    status = core.read_namespaced_pod(name, NAMESPACE).status.container_statuses[0]
    assert status.restart_count == 2
    assert status.last_state.terminated.exit_code == 1
    assert core.read_namespaced_pod_log(name, NAMESPACE) == "3\n"
    assert core.read_namespaced_pod_log(name, NAMESPACE, previous=True) == "2\n"


def test_an_evicted_pod_gets_disruption_target_and_goes(core: Any) -> None:
    name = _name("evict")
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(name, ["python", "-c", stubborn], pod_spec={"terminationGracePeriodSeconds": 2}),
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Running", what="running"
    )
    wait_for(lambda: core.read_namespaced_pod_log(name, NAMESPACE), what="the handler")
    core.create_namespaced_pod_eviction(
        name,
        NAMESPACE,
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": NAMESPACE},
        },
    )
    condition = _condition(core, name, "DisruptionTarget")
    assert (condition.reason, condition.message) == (
        "EvictionByEvictionAPI",
        "Eviction API: evicting",
    )
    assert core.read_namespaced_pod(name, NAMESPACE).metadata.deletion_timestamp is not None
    wait_for(
        lambda: (
            not core.list_namespaced_pod(NAMESPACE, field_selector=f"metadata.name={name}").items
        ),
        what="the pod to go",
    )


def test_a_pending_pod_runs_on_a_node_that_joins_and_fails_as_pod_gc_fails_it_when_the_node_goes(
    core: Any,
) -> None:
    from kubernetes import watch

    node, name = _name("spot"), _name("lost")
    core.create_namespaced_pod(
        NAMESPACE,
        pod_body(
            name,
            ["python", "-c", "import time; time.sleep(60)"],
            pod_spec={"nodeSelector": {"pool": "spot"}},
        ),
    )
    condition = wait_for(lambda: _condition(core, name, "PodScheduled"), what="Unschedulable")
    assert "didn't match Pod's node affinity/selector" in condition.message
    # a node that fits joins: the scheduler tries again
    core.create_node(
        {
            "metadata": {"name": node, "labels": {"pool": "spot"}},
            "status": {"capacity": {"cpu": "2", "memory": "4Gi"}},
        }
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Running", what="running"
    )
    version = core.read_namespaced_pod(name, NAMESPACE).metadata.resource_version
    core.delete_node(node)
    for event in watch.Watch().stream(
        core.list_namespaced_pod,
        NAMESPACE,
        field_selector=f"metadata.name={name}",
        resource_version=version,
        timeout_seconds=20,
    ):
        pod = event["object"]
        if pod.status.phase == "Failed":
            break
    condition = next(c for c in pod.status.conditions if c.type == "DisruptionTarget")
    assert (condition.reason, condition.message) == (
        "DeletionByPodGC",
        "PodGC: node no longer exists",
    )


def test_init_containers_run_to_completion_before_the_containers(core: Any) -> None:
    name = _name("init")
    body = pod_body(name, ["python", "-c", "print('main')"])
    body["spec"]["initContainers"] = [
        {"name": "setup", "image": "busybox:1.36", "command": ["python", "-c", "print('setup')"]}
    ]
    core.create_namespaced_pod(NAMESPACE, body)
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Succeeded",
        what="success",
    )
    status = core.read_namespaced_pod(name, NAMESPACE).status
    assert status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert core.read_namespaced_pod_log(name, NAMESPACE, container="setup") == "setup\n"
    assert core.read_namespaced_pod_log(name, NAMESPACE) == "main\n"


def test_a_followed_log_streams_until_the_container_ends(core: Any) -> None:
    name = _name("follow")
    script = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)\n"
    core.create_namespaced_pod(NAMESPACE, pod_body(name, ["python", "-c", script]))
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Running",
        what="running",
    )
    response = core.read_namespaced_pod_log(name, NAMESPACE, follow=True, _preload_content=False)
    streamed = b"".join(response.stream())
    assert streamed == b"0\n1\n2\n"
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase == "Succeeded",
        what="success",
    )
    assert core.read_namespaced_pod_log(name, NAMESPACE, tail_lines=1) == "2\n"


def test_a_pod_reaches_the_api_with_in_cluster_configuration(core: Any) -> None:
    name = _name("incluster")
    script = (
        "import os\n"
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "namespace = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n"
        "pod = client.CoreV1Api().read_namespaced_pod(os.environ['HOSTNAME'], namespace)\n"
        "print(pod.spec.service_account_name, pod.metadata.name)\n"
    )
    core.create_namespaced_pod(NAMESPACE, pod_body(name, ["python", "-c", script]))
    wait_for(
        lambda: core.read_namespaced_pod(name, NAMESPACE).status.phase in ("Succeeded", "Failed"),
        timeout=30,
        what="the pod to finish",
    )
    assert core.read_namespaced_pod_log(name, NAMESPACE) == f"default {name}\n"
