"""Broker URLs with passwords on the fake cluster: ``mlyard consume --backend`` keeps them in the
service's credentials Secret, so no Deployment, ReplicaSet or Pod read back from the API (nor
the dry run) holds them, and the pods still get them (``$(VAR)`` from ``secretKeyRef``
variables, expanded by the kubelet): the consumers log in to the real Redis as a user whose
password they only know from the Secret, and process messages."""

from __future__ import annotations

import base64
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml

from tests.e2e.cli import mlyard
from tests.integration.kubernetes.conftest import CREDENTIALS_SECRET, NAMESPACE, S3_VARIABLES

pytestmark = pytest.mark.integration
BACKEND = "k8s"
USER = "k8s-consumer"
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
NAME = "cred-consumer"


@pytest.fixture(scope="module")
def redis_user(services: Callable[[str], dict[str, str]]) -> Iterator[str]:
    """The session's Redis with a user that needs ``PASSWORD`` (its default user stays open
    for the other tests); the URL of its database as that user."""
    url = services("redis")["REDIS_URL"]
    admin = redis.Redis.from_url(url)
    admin.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all")
    host_and_db = url.split("://", 1)[1]
    try:
        yield f"redis://{USER}:{PASSWORD}@{host_and_db}"
    finally:
        admin.execute_command("ACL", "DELUSER", USER)
        admin.close()


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    kube: dict[str, str],
    s3: dict[str, str],
    credentials_secret: str,
    core_api: Any,
) -> Iterator[tuple[Path, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("k8s-credentials")
    (directory / "mlyard.toml").write_text(
        f"[backends.{BACKEND}]\n"
        'type = "kubernetes"\n'
        f"kubeconfig = {json.dumps(kube['KUBECONFIG'])}\n"
        'context = "fake"\n'
        f'namespace = "{NAMESPACE}"\n'
        'image = "registry.example.com/mlyard:test"\n'
        f'artifact_credentials_secret = "{CREDENTIALS_SECRET}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLYARD_")}
    env.update(
        MLYARD_HOME=str(directory / "home"),
        MLYARD_STORAGE__ARTIFACTS=f"s3://{s3['S3_BUCKET']}/credentials",
        MLYARD_STORAGE__ENDPOINT_URL=s3["S3_ENDPOINT_URL"],
        KUBECONFIG=kube["KUBECONFIG"],
        **{key: s3[key] for key in S3_VARIABLES},
    )
    # Room for the replica beside the terminating pods of earlier tests (as test_services).
    node = "credentials-node"
    core_api.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node},
            "status": {"capacity": {"cpu": "16", "memory": "32Gi", "pods": "110"}},
        }
    )
    try:
        yield directory, env
    finally:
        core_api.delete_node(node)


def _cli(project: tuple[Path, dict[str, str]], *args: str) -> Any:
    directory, env = project
    done = mlyard(*args, cwd=directory, env=env, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _serialized(core_api: Any, objects: Any) -> str:
    return json.dumps(core_api.api_client.sanitize_for_serialization(objects))


def test_broker_passwords_stay_in_the_secret_and_the_consumer_logs_in(
    project: tuple[Path, dict[str, str]],
    redis_user: str,
    core_api: Any,
    s3_environment: dict[str, str],
) -> None:
    from kubernetes import client

    from mlyard.artifacts.store import ArtifactStore
    from mlyard.consumers.urls import open_sink, open_source

    with pytest.raises(redis.AuthenticationError):  # the password is what lets them in
        redis.Redis.from_url(redis_user.replace(PASSWORD, "wrong")).ping()
    run = uuid.uuid4().hex[:8]
    source = f"{redis_user}?stream=in-{run}&group=workers"
    sink = f"{redis_user}?stream=out-{run}"
    store = ArtifactStore(
        project[1]["MLYARD_STORAGE__ARTIFACTS"], endpoint_url=s3_environment["S3_ENDPOINT_URL"]
    )
    for index in range(3):
        buffer = io.BytesIO()
        np.save(buffer, np.arange(4, dtype=np.float64) + index)
        store.write_key(f"arrays/{index}.npy", buffer.getvalue())
    messages = [json.dumps({"id": str(i), "objects": [f"arrays/{i % 3}.npy"]}) for i in range(6)]
    open_sink(f"{redis_user}?stream=in-{run}").publish([m.encode() for m in messages])
    arguments = ["consume", "--source", source, "--sink", sink, "--model", "noop",
                 "--backend", BACKEND, "--name", NAME]  # fmt: skip

    dry = _cli(project, *arguments, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert PASSWORD not in dry.stdout + dry.stderr
    assert f"create secret generic {NAME}-credentials" in dry.stdout
    assert f"{USER}:***@" in dry.stdout
    (printed,) = yaml.safe_load_all(dry.stdout)
    assert printed["kind"] == "Deployment"

    done = _cli(project, *arguments)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    apps = client.AppsV1Api(core_api.api_client)
    try:
        results = open_source(f"{redis_user}?stream=out-{run}&group=check", "check")
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while len(seen) < len(messages):
            if time.monotonic() > deadline:
                logs = _cli(project, "services", "logs", NAME, "--backend", BACKEND).stdout
                raise AssertionError(f"{len(seen)} results only:\n{logs[-3000:]}")
            for delivery in results.receive(100, 0.5):
                seen[json.loads(delivery.payload)["data"]["id"]] = delivery
                results.acknowledge([delivery])
        assert sorted(seen) == [str(i) for i in range(6)]

        deployment = apps.read_namespaced_deployment(NAME, NAMESPACE)
        selector = f"mlyard.io/service={NAME}"
        pods = core_api.list_namespaced_pod(NAMESPACE, label_selector=selector)
        replica_sets = apps.list_namespaced_replica_set(NAMESPACE, label_selector=selector)
        assert pods.items and replica_sets.items
        for found in (deployment, replica_sets, pods):
            assert PASSWORD not in _serialized(core_api, found)
        container = deployment.spec.template.spec.containers[0]
        assert container.command[container.command.index("--source") + 1] == (
            "$(MLYARD_SECRET_SOURCE)"
        )
        secret = core_api.read_namespaced_secret(f"{NAME}-credentials", NAMESPACE)
        stored = base64.b64decode(secret.data["MLYARD_SECRET_SOURCE"]).decode()
        assert stored == source
        version = deployment.spec.template.metadata.annotations["mlyard.io/secrets-version"]

        # New credentials replace the Secret's and roll the pods (which read it at start).
        moved = sink.replace(f"out-{run}", f"again-{run}")
        again = _cli(project, *arguments[:4], moved, *arguments[5:])
        assert again.returncode == 0, again.stderr
        deployment = apps.read_namespaced_deployment(NAME, NAMESPACE)
        annotations = deployment.spec.template.metadata.annotations
        assert annotations["mlyard.io/secrets-version"] != version
    finally:
        stopped = _cli(project, "services", "stop", NAME, "--backend", BACKEND, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert sorted(json.loads(stopped.stdout)["deleted"]) == [
        f"Deployment/{NAME}",
        f"Secret/{NAME}-credentials",
    ]
    left = core_api.list_namespaced_secret(NAMESPACE, label_selector=f"mlyard.io/service={NAME}")
    assert left.items == []
