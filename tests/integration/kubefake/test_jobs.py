"""Jobs on the fake, through the official client: pods as the Job controller makes them, a
real process per container, status and conditions, logs, deadlines, deletion."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

from tests.integration.kubefake.conftest import NAMESPACE, job_body, wait_for

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _job_pods(core: Any, job: str) -> list[Any]:
    return core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job}").items


def test_a_job_runs_its_command_and_completes_as_the_job_controller_reports(
    batch: Any, core: Any
) -> None:
    from kubernetes import watch

    name = _name("hello")
    batch.create_namespaced_job(NAMESPACE, job_body(name, ["python", "-c", "print('hi')"]))
    stream = watch.Watch().stream(
        batch.list_namespaced_job,
        NAMESPACE,
        field_selector=f"metadata.name={name}",
        timeout_seconds=30,
    )
    seen = []
    for event in stream:
        conditions = {c.type: c for c in event["object"].status.conditions or []}
        seen.append(event["type"])
        if "Complete" in conditions:
            break
    assert seen[0] == "ADDED"
    assert conditions["SuccessCriteriaMet"].reason == "CompletionsReached"
    assert conditions["Complete"].status == "True"
    job = batch.read_namespaced_job(name, NAMESPACE)
    assert job.status.succeeded == 1 and job.status.completion_time is not None
    (pod,) = _job_pods(core, name)
    assert pod.metadata.name.startswith(f"{name}-") and len(pod.metadata.name) == len(name) + 6
    labels = pod.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == name == labels["job-name"]
    assert (
        labels["controller-uid"] == job.metadata.uid == labels["batch.kubernetes.io/controller-uid"]
    )
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("Job", job.metadata.uid, True)
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE) == "hi\n"


def test_the_pod_runs_with_the_pod_environment_and_the_test_interpreter(
    batch: Any, core: Any
) -> None:
    name = _name("env")
    script = (
        "import os, sys; print(sys.executable); "
        "print(os.environ['MY_POD'], os.environ['MY_NS'], os.environ['GREETING'])"
    )
    container = {
        "env": [
            {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "WHO", "value": "world"},
            {"name": "GREETING", "value": "hello-$(WHO)"},
        ]
    }
    batch.create_namespaced_job(
        NAMESPACE, job_body(name, ["python", "-c", script], container=container)
    )
    wait_for(lambda: batch.read_namespaced_job(name, NAMESPACE).status.succeeded, what="success")
    (pod,) = _job_pods(core, name)
    executable, values = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE).splitlines()
    assert executable.startswith(sys.prefix)
    assert values == f"{pod.metadata.name} {NAMESPACE} hello-world"


def test_a_second_create_is_409_already_exists(batch: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    name = _name("twice")
    body = job_body(name, ["python", "-c", "pass"])
    batch.create_namespaced_job(NAMESPACE, body)
    with pytest.raises(ApiException) as raised:
        batch.create_namespaced_job(NAMESPACE, body)
    assert (raised.value.status, raised.value.reason) == (409, "Conflict")
    import json

    status = json.loads(raised.value.body)
    assert status["reason"] == "AlreadyExists"
    assert status["message"] == f'jobs.batch "{name}" already exists'
    assert status["details"] == {"name": name, "group": "batch", "kind": "jobs"}


def test_a_failing_pod_fails_the_job_with_backoff_limit_exceeded(batch: Any, core: Any) -> None:
    name = _name("fails")
    batch.create_namespaced_job(
        NAMESPACE, job_body(name, ["python", "-c", "import sys; print('bad'); sys.exit(3)"])
    )

    def failed() -> Any:
        conditions = batch.read_namespaced_job(name, NAMESPACE).status.conditions or []
        return next((c for c in conditions if c.type == "Failed"), None)

    condition = wait_for(failed, what="Failed condition")
    assert condition.reason == "BackoffLimitExceeded"
    assert condition.message == "Job has reached the specified backoff limit"
    job = batch.read_namespaced_job(name, NAMESPACE)
    assert [c.type for c in job.status.conditions] == ["FailureTarget", "Failed"]
    assert job.status.failed == 1 and job.status.completion_time is None
    (pod,) = _job_pods(core, name)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")


def test_the_active_deadline_kills_the_pods_and_fails_the_job(batch: Any, core: Any) -> None:
    name = _name("deadline")
    batch.create_namespaced_job(
        NAMESPACE,
        job_body(name, ["python", "-c", "import time; time.sleep(60)"], activeDeadlineSeconds=1),
    )

    def failed() -> Any:
        conditions = batch.read_namespaced_job(name, NAMESPACE).status.conditions or []
        return next((c for c in conditions if c.type == "Failed"), None)

    condition = wait_for(failed, timeout=15, what="DeadlineExceeded")
    assert (condition.reason, condition.message) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    assert batch.read_namespaced_job(name, NAMESPACE).status.active is None
    wait_for(lambda: not _job_pods(core, name), what="the killed pod to go")


def test_indexed_jobs_name_and_number_their_pods(batch: Any, core: Any) -> None:
    name = _name("indexed")
    batch.create_namespaced_job(
        NAMESPACE,
        job_body(
            name,
            ["python", "-c", "import os; print(os.environ['JOB_COMPLETION_INDEX'])"],
            completions=3,
            parallelism=3,
            completionMode="Indexed",
        ),
    )
    wait_for(
        lambda: batch.read_namespaced_job(name, NAMESPACE).status.succeeded == 3,
        what="three successes",
    )
    job = batch.read_namespaced_job(name, NAMESPACE)
    assert job.status.completed_indexes == "0-2"
    for pod in _job_pods(core, name):
        index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        assert pod.metadata.name.startswith(f"{name}-{index}-")
        assert pod.spec.hostname == f"{name}-{index}"
        assert core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE) == f"{index}\n"


def test_deleting_a_job_in_the_background_kills_its_running_pods(batch: Any, core: Any) -> None:
    name = _name("cancel")
    batch.create_namespaced_job(
        NAMESPACE,
        job_body(name, ["python", "-c", "import time; print('up', flush=True); time.sleep(120)"]),
    )
    pod_name = wait_for(
        lambda: next(
            (p.metadata.name for p in _job_pods(core, name) if p.status.phase == "Running"), None
        ),
        what="running",
    )
    wait_for(lambda: core.read_namespaced_pod_log(pod_name, NAMESPACE), what="log")
    batch.delete_namespaced_job(name, NAMESPACE, propagation_policy="Background")
    wait_for(lambda: not _job_pods(core, name), timeout=40, what="the pod to go")
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        batch.read_namespaced_job(name, NAMESPACE)
    assert raised.value.status == 404


def test_deleting_a_job_without_a_policy_orphans_its_pods(batch: Any, core: Any) -> None:
    name = _name("orphan")
    batch.create_namespaced_job(NAMESPACE, job_body(name, ["python", "-c", "pass"]))
    wait_for(lambda: batch.read_namespaced_job(name, NAMESPACE).status.succeeded, what="success")
    batch.delete_namespaced_job(name, NAMESPACE)
    (pod,) = wait_for(
        lambda: [p for p in _job_pods(core, name) if not p.metadata.owner_references],
        what="an orphan",
    )
    core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)


def test_indexed_pods_resolve_each_other_through_their_headless_service(
    batch: Any, core: Any
) -> None:
    name = _name("peers")
    core.create_namespaced_service(
        NAMESPACE,
        {
            "metadata": {"name": name},
            "spec": {
                "clusterIP": "None",
                "selector": {"job-name": name},
                "ports": [{"port": 29500}],
            },
        },
    )
    script = (
        "import os, socket, time\n"
        "index = int(os.environ['JOB_COMPLETION_INDEX'])\n"
        f"peer = '{name}-%d.{name}' % (1 - index)\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        address = socket.gethostbyname(peer); break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "print(socket.gethostname(), address)\n"
    )
    body = job_body(
        name, ["python", "-c", script], completions=2, parallelism=2, completionMode="Indexed"
    )
    body["spec"]["template"]["spec"]["subdomain"] = name
    batch.create_namespaced_job(NAMESPACE, body)
    wait_for(
        lambda: batch.read_namespaced_job(name, NAMESPACE).status.succeeded == 2,
        timeout=30,
        what="both pods",
    )
    pods = {
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p
        for p in _job_pods(core, name)
    }
    for index, pod in pods.items():
        hostname, address = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE).split()
        assert hostname == f"{name}-{index}"
        assert address == pods[str(1 - int(index))].status.pod_ip
    core.delete_namespaced_service(name, NAMESPACE)


def test_on_failure_restarts_count_against_the_backoff_limit(batch: Any) -> None:
    name = _name("restarts")
    body = job_body(name, ["python", "-c", "raise SystemExit(1)"], backoffLimit=1)
    body["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    batch.create_namespaced_job(NAMESPACE, body)

    def failed() -> Any:
        conditions = batch.read_namespaced_job(name, NAMESPACE).status.conditions or []
        return next((c for c in conditions if c.type == "Failed"), None)

    assert wait_for(failed, timeout=30, what="BackoffLimitExceeded").reason == (
        "BackoffLimitExceeded"
    )
