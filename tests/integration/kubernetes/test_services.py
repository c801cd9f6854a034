"""``mlyard serve`` / ``mlyard consume`` with ``--backend`` on the fake cluster, and ``mlyard
services`` managing them: real pods (local processes at their own loopback address) load a
registered model from a SQLite MLflow store and answer v2 requests with the token the command
made; consumers read objects from SeaweedFS named by messages on the embedded SQLite queue."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import numpy as np
import pytest
import yaml

from tests.e2e.cli import mlyard, mlyard_json
from tests.integration.kubernetes.conftest import CREDENTIALS_SECRET, NAMESPACE, S3_VARIABLES
from tests.integration.services_models import register_digits

pytestmark = pytest.mark.integration
BACKEND = "k8s"


@dataclass(frozen=True)
class Project:
    directory: Path
    env: dict[str, str]
    predictions: list[int]
    rows: list[list[float]]


@pytest.fixture(scope="module", autouse=True)
def _room_for_replicas(core_api: Any) -> Iterator[None]:
    """A roomier node: the default one has this machine's CPUs (2), and replicas of an earlier
    test keep theirs through their termination grace period, which can leave a new replica
    Pending for CPU as a real scheduler would."""
    name = "services-node"
    core_api.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {"capacity": {"cpu": "16", "memory": "32Gi", "pods": "110"}},
        }
    )
    yield
    core_api.delete_node(name)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    kube: dict[str, str],
    s3: dict[str, str],
    credentials_secret: str,
) -> Project:
    directory = tmp_path_factory.mktemp("k8s-services")
    model = register_digits(directory)
    (directory / "mlyard.toml").write_text(
        f"[backends.{BACKEND}]\n"
        'type = "kubernetes"\n'
        f"kubeconfig = {json.dumps(kube['KUBECONFIG'])}\n"
        'context = "fake"\n'
        f'namespace = "{NAMESPACE}"\n'
        'image = "registry.example.com/mlyard:test"\n'
        f'artifact_credentials_secret = "{CREDENTIALS_SECRET}"\n'
        "\n[backends.hpc]\n"
        'type = "slurm"\n'
        'partition = "debug"\n'
        "login_node_local = true\n"
        "\n[backends.onegpu]\n"
        'type = "kubernetes"\n'
        'image = "registry.example.com/mlyard:test"\n'
        'gpu_sharing = "exclusive"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLYARD_")}
    env.update(
        MLYARD_HOME=str(directory / "home"),
        MLYARD_TRACKING__URI=model.tracking_uri,
        MLYARD_STORAGE__ARTIFACTS=f"s3://{s3['S3_BUCKET']}/services",
        MLYARD_STORAGE__ENDPOINT_URL=s3["S3_ENDPOINT_URL"],
        KUBECONFIG=kube["KUBECONFIG"],
        **{key: s3[key] for key in S3_VARIABLES},
    )
    return Project(directory, env, model.predictions, model.rows)


def _cli(project: Project, *args: str) -> Any:
    done = mlyard(*args, cwd=project.directory, env=project.env, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _show(project: Project, name: str) -> dict[str, Any]:
    shown: dict[str, Any] = mlyard_json(
        "services", "show", name, "--backend", BACKEND, cwd=project.directory, env=project.env
    )
    return shown


def _wait_for(
    project: Project, name: str, ready: Callable[[dict[str, Any]], bool], seconds: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        shown = _show(project, name)
        if ready(shown):
            return shown
        if time.monotonic() > deadline:
            logs = _cli(project, "services", "logs", name, "--backend", BACKEND).stdout
            raise AssertionError(f"service {name} never got there: {shown}\n{logs[-3000:]}")
        time.sleep(1.0)


def _objects(core_api: Any, kind: str, name: str) -> list[str]:
    from kubernetes import client

    selector = f"mlyard.io/service={name}"
    if kind == "Deployment":
        apps = client.AppsV1Api(core_api.api_client)
        found = apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items
    elif kind == "Service":
        found = core_api.list_namespaced_service(NAMESPACE, label_selector=selector).items
    else:
        found = core_api.list_namespaced_secret(NAMESPACE, label_selector=selector).items
    return [item.metadata.name for item in found]


@pytest.fixture(scope="module")
def server(project: Project, core_api: Any) -> Iterator[dict[str, Any]]:
    """Two replicas of the digits server, Ready."""
    done = _cli(
        project,
        "serve", "models:/Digits_Classifier/1", "--backend", BACKEND, "--replicas", "2",
        "--grpc-port", "8081",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Created server service digits-classifier" in done.stderr
    token_file = project.directory / "home" / "services" / "digits-classifier.token"
    token = token_file.read_text().strip()
    assert f"shown only now): {token}" in done.stderr
    try:
        shown = _wait_for(project, "digits-classifier", lambda s: s["ready"] == 2)
        yield {"token": token, "token_file": token_file, "shown": shown}
    finally:
        _cli(project, "services", "stop", "digits-classifier", "--backend", BACKEND)


def test_served_replicas_answer_at_their_pod_ip_with_the_token(
    project: Project, server: dict[str, Any], core_api: Any
) -> None:
    shown = server["shown"]
    assert shown["kind"] == "server"
    assert shown["model"] == "models:/Digits_Classifier/1"
    assert shown["address"].startswith(f"digits-classifier.{NAMESPACE}.svc:8080")
    assert len(shown["pods"]) == 2
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [4, 64], "data": project.rows}]
    }
    headers = {"Authorization": f"Bearer {server['token']}"}
    addresses = {pod["address"] for pod in shown["pods"]}
    assert len(addresses) == 2  # each pod its own IP
    for address in addresses:
        url = f"http://{address}/v2/models/Digits_Classifier/infer"
        answer = httpx.post(url, json=body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == project.predictions
        assert httpx.post(url, json=body, timeout=30).status_code == 401
    # The token is in the Secret only, never in the Deployment; its file is the owner's.
    assert stat.S_IMODE(server["token_file"].stat().st_mode) == 0o600
    from kubernetes import client

    apps = client.AppsV1Api(core_api.api_client)
    deployment = apps.read_namespaced_deployment("digits-classifier", NAMESPACE)
    assert server["token"] not in json.dumps(
        core_api.api_client.sanitize_for_serialization(deployment)
    )
    annotations = deployment.spec.template.metadata.annotations
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    service = core_api.read_namespaced_service("digits-classifier", NAMESPACE)
    assert {p.name: p.port for p in service.spec.ports} == {"http": 8080, "grpc": 8081}


def test_services_ls_logs_scale_and_a_second_serve_updates(
    project: Project, server: dict[str, Any]
) -> None:
    listed = mlyard_json(
        "services", "ls", "--backend", BACKEND, cwd=project.directory, env=project.env
    )
    assert [(s["name"], s["ready"], s["replicas"]) for s in listed] == [("digits-classifier", 2, 2)]
    logs = _cli(project, "services", "logs", "digits-classifier", "--backend", BACKEND)
    assert logs.returncode == 0, logs.stderr
    pods = {pod["name"] for pod in server["shown"]["pods"]}
    for pod in pods:
        assert f"[{pod}] Serving Digits_Classifier version 1" in logs.stdout

    again = _cli(
        project,
        "serve", "models:/Digits_Classifier/1", "--backend", BACKEND, "--replicas", "2",
        "--grpc-port", "8081",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "Updated server service digits-classifier" in again.stderr
    assert "token" not in again.stderr.lower().split("replica(s))")[-1].split("see")[0]
    assert server["token_file"].read_text().strip() == server["token"]  # kept

    scaled = _cli(project, "services", "scale", "digits-classifier", "1", "--backend", BACKEND)
    assert scaled.returncode == 0, scaled.stderr
    shown = _wait_for(
        project, "digits-classifier", lambda s: s["replicas"] == 1 and len(s["pods"]) == 1
    )
    assert shown["ready"] == 1


def test_consumers_process_messages_on_the_cluster(
    project: Project, core_api: Any, s3_environment: dict[str, str]
) -> None:
    from mlyard.artifacts.store import ArtifactStore
    from mlyard.consumers.urls import open_sink, open_source

    queue = f"sqlite:///{project.directory / 'queue.db'}"
    store = ArtifactStore(
        project.env["MLYARD_STORAGE__ARTIFACTS"],
        endpoint_url=project.env["MLYARD_STORAGE__ENDPOINT_URL"],
    )
    keys = []
    for index, row in enumerate(project.rows):
        buffer = io.BytesIO()
        np.save(buffer, np.array(row))
        store.write_key(f"digits/{index}.npy", buffer.getvalue())
        keys.append(f"digits/{index}.npy")
    messages = [json.dumps({"id": str(i), "objects": [keys[i % 4]]}).encode() for i in range(40)]
    open_sink(f"{queue}?topic=in").publish(messages)
    done = _cli(
        project,
        "consume", "--source", f"{queue}?topic=in", "--sink", f"{queue}?topic=out",
        "--model", "models:/Digits_Classifier/1", "--backend", BACKEND, "--replicas", "2",
        "--batch-size", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    name = "digits-classifier-consumer"
    try:
        shown = _wait_for(project, name, lambda s: s["ready"] == 2)
        assert shown["kind"] == "consumer"
        results = open_source(f"{queue}?topic=out", "reader")
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while len(seen) < 40:
            assert time.monotonic() < deadline, f"only {len(seen)} results"
            for delivery in results.receive(100, 0.5):
                result = json.loads(delivery.payload)
                seen[result["data"]["id"]] = result
                results.acknowledge([delivery])
        first = seen["0"]
        assert str(project.predictions[0]) in json.dumps(first)
        consumers = {r.get("consumer") for r in seen.values()} - {None}
        assert consumers <= {pod["name"] for pod in shown["pods"]} | {None}
    finally:
        stopped = _cli(project, "services", "stop", name, "--backend", BACKEND, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["deleted"] == [f"Deployment/{name}"]
    assert _objects(core_api, "Deployment", name) == []


def test_stop_deletes_the_deployment_service_and_secret(project: Project, core_api: Any) -> None:
    done = _cli(
        project,
        "serve",
        "models:/Digits_Classifier/1",
        "--backend",
        BACKEND,
        "--name",
        "short-lived",
    )
    assert done.returncode == 0, done.stderr
    for kind in ("Deployment", "Service", "Secret"):
        assert _objects(core_api, kind, "short-lived") == [
            "short-lived-token" if kind == "Secret" else "short-lived"
        ]
    stopped = _cli(project, "services", "stop", "short-lived", "--backend", BACKEND, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert sorted(json.loads(stopped.stdout)["deleted"]) == [
        "Deployment/short-lived",
        "Secret/short-lived-token",
        "Service/short-lived",
    ]
    for kind in ("Deployment", "Service", "Secret"):
        assert _objects(core_api, kind, "short-lived") == []
    missing = _cli(project, "services", "show", "short-lived", "--backend", BACKEND)
    assert missing.returncode != 0
    assert "runs no service 'short-lived'" in missing.stdout + missing.stderr


def test_logs_follow_prints_new_lines_until_the_service_ends(
    project: Project, tmp_path: Path
) -> None:
    """``services logs -f`` streams what the pod writes after the command started (uvicorn's
    shutdown lines, at --log-level info) and ends by itself when the pod's container ends."""
    name = "followed"
    done = _cli(
        project, "serve", "models:/Digits_Classifier/1", "--backend", BACKEND, "--name", name,
        "--log-level", "info",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    followed = tmp_path / "follow.out"
    try:
        (pod,) = _wait_for(project, name, lambda s: s["ready"] == 1)["pods"]
        with followed.open("w") as out:
            follower = subprocess.Popen(
                [sys.executable, "-m", "mlyard.cli", "services", "logs", name, "-f",
                 "--backend", BACKEND],
                cwd=project.directory, env={**os.environ, **project.env}, stdout=out,
                stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        try:
            _until(lambda: f"[{pod['name']}] Serving Digits_Classifier" in followed.read_text())
            assert "Shutting down" not in followed.read_text()
            assert follower.poll() is None  # still following the running pod
            stopped = _cli(project, "services", "stop", name, "--backend", BACKEND)
            assert stopped.returncode == 0, stopped.stderr
            assert follower.wait(timeout=90) == 0, followed.read_text()
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
    finally:
        _cli(project, "services", "stop", name, "--backend", BACKEND)
    lines = followed.read_text().splitlines()
    shutdown = [line for line in lines if "Shutting down" in line]
    assert shutdown and all(line.startswith(f"[{pod['name']}] ") for line in shutdown), lines[-20:]
    assert "Traceback" not in followed.read_text()


def _until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_dry_run_prints_valid_manifests_and_creates_nothing(
    project: Project, core_api: Any
) -> None:
    done = _cli(
        project,
        "serve", "models:/Digits_Classifier/1", "--backend", BACKEND, "--replicas", "3",
        "--name", "dry", "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "create secret generic dry-token" in done.stdout
    manifests = list(yaml.safe_load_all(done.stdout))
    assert [m["kind"] for m in manifests] == ["Deployment", "Service"]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.34.0", strict=True)
    pod = manifests[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert manifests[0]["spec"]["replicas"] == 3
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {
        "name": "MLYARD_POD_IP",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
    } in container["env"]
    assert "$(MLYARD_POD_IP)" in container["command"]
    assert manifests[0]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlyard"
    assert _objects(core_api, "Deployment", "dry") == []

    consumer = _cli(
        project,
        "consume", "--source", "sqlite:///q.db?topic=in", "--sink", "sqlite:///q.db?topic=out",
        "--model", "noop", "--backend", BACKEND, "--dry-run",
    )  # fmt: skip
    assert consumer.returncode == 0, consumer.stderr
    (deployment,) = yaml.safe_load_all(consumer.stdout)
    kubernetes_validate.validate(deployment, "1.34.0", strict=True)
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_bad_input_is_refused_with_the_fix(project: Project) -> None:
    fraction = _cli(
        project, "serve", "models:/Digits_Classifier/1", "--backend", "onegpu", "--gpus", "0.5",
        "--dry-run",
    )  # fmt: skip
    assert fraction.returncode != 0
    assert "gpus=0.5" in fraction.stderr and "gpu_sharing" in fraction.stderr
    slurm = _cli(project, "serve", "models:/Digits_Classifier/1", "--backend", "hpc")
    assert slurm.returncode != 0
    assert "Backend 'hpc' (slurm) cannot" in slurm.stderr
    bad_name = _cli(
        project, "serve", "models:/Digits_Classifier/1", "--backend", BACKEND, "--name", "Bad_Name",
        "--dry-run",
    )  # fmt: skip
    assert bad_name.returncode != 0
    assert "'Bad_Name' cannot name a service" in bad_name.stderr
