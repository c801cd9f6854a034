"""The Kubernetes backend against the fake API server (tests/kubefake, started by
scripts/services/kube-fake.sh) whose kubelet runs each pod's command as a local process, with
the artifact store on a real SeaweedFS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend
from mlyard.backends.registry import create_backend
from mlyard.settings import load_settings

NAMESPACE = "mlyard"
CREDENTIALS_SECRET = "s3-credentials"
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def kube(services: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return services("kube-fake")


@pytest.fixture(scope="session")
def s3(services: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return services("seaweedfs")


@pytest.fixture(scope="session")
def core_api(kube: dict[str, str]) -> Iterator[Any]:
    """The official client on the fake, as an administrator (for setting the scene)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=kube["KUBECONFIG"], context="fake")
    yield client.CoreV1Api(api_client)
    api_client.close()


@pytest.fixture(scope="session")
def credentials_secret(core_api: Any, s3: dict[str, str]) -> str:
    """The Secret holding the store's credentials, as a user creates it with kubectl."""
    from kubernetes.client.exceptions import ApiException

    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET},
        "stringData": {key: s3[key] for key in S3_VARIABLES},
    }
    try:
        core_api.create_namespaced_secret(NAMESPACE, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    return CREDENTIALS_SECRET


@pytest.fixture
def s3_environment(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process reaches the store (the orchestrator's side)."""
    for key in S3_VARIABLES:
        monkeypatch.setenv(key, s3[key])
    return s3


@pytest.fixture
def store(s3_environment: dict[str, str]) -> ArtifactStore:
    prefix = f"k8s-{uuid.uuid4().hex[:8]}"
    return ArtifactStore(
        f"s3://{s3_environment['S3_BUCKET']}/{prefix}",
        endpoint_url=s3_environment["S3_ENDPOINT_URL"],
    )


def profile_fields(kube: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {
        "type": "kubernetes",
        "kubeconfig": kube["KUBECONFIG"],
        "context": "fake",
        "namespace": NAMESPACE,
        "image": "registry.example.com/mlyard:test",
        "artifact_credentials_secret": CREDENTIALS_SECRET,
        **fields,
    }


def make_backend(kube: dict[str, str], store: ArtifactStore, **fields: Any) -> Backend:
    settings = load_settings(backends={"k8s": profile_fields(kube, **fields)})
    return create_backend("k8s", settings, store)


@pytest.fixture
def backend(
    kube: dict[str, str], store: ArtifactStore, credentials_secret: str
) -> Iterator[Backend]:
    created = make_backend(kube, store)
    yield created
    created.close()


def write_kubeconfig(path: Path, server: str, source: str) -> Path:
    """A copy of the fake's kubeconfig whose clusters point at ``server``."""
    import yaml

    config = yaml.safe_load(Path(source).read_text())
    for cluster in config.get("clusters") or []:
        cluster["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    return path
