"""Every object mlyard would send is valid against the official schema of a supported
Kubernetes version, and carries what the step asked for."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.kubernetes.backend import KubernetesBackend
from mlyard.backends.registry import create_backend
from mlyard.errors import ConfigError
from mlyard.models.resources import Resources
from mlyard.settings import load_settings

#: DRA's resource.k8s.io/v1 is GA from 1.34; 1.31 is the oldest the client supports here.
SCHEMA_VERSIONS = ("1.34.0", "1.35.0")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TASK_URI = "s3://mlyard/runs/tasks/r1.2.1/task.json"


def backend(**fields: Any) -> KubernetesBackend:
    profile = {"type": "kubernetes", "image": "registry.example.com/mlyard:1", **fields}
    settings = load_settings(backends={"gpu": profile})
    store = ArtifactStore("s3://mlyard/runs", endpoint_url="http://s3.example.com:8333")
    created = create_backend("gpu", settings, store)
    assert isinstance(created, KubernetesBackend)
    return created


def render(resources: Resources, **fields: Any) -> list[dict[str, Any]]:
    return backend(**fields).render_manifests(
        run_id="r1",
        attempt_id="r1.2.1",
        step_name="train",
        resources=resources,
        task_uri=TASK_URI,
        environment={"MLYARD_SEED": "7"},
    )


def validate(manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{manifest['kind']} invalid for {version}: {error.message}")
        assert DNS_LABEL.match(manifest["metadata"]["name"])
        assert len(manifest["metadata"]["name"]) <= 63


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    return containers[0]


def test_a_cpu_step_is_one_job_running_the_runtime() -> None:
    manifests = render(Resources(cpus=0.5, memory="2GiB", time_limit="1h"))
    validate(manifests)
    [job] = manifests
    assert job["kind"] == "Job" and job["metadata"]["name"] == "mlyard-r1-2-1"
    assert job["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "mlyard",
        "mlyard.io/backend": "gpu",
        "mlyard.io/run-id": "r1",
        "mlyard.io/attempt-id": "r1.2.1",
        "mlyard.io/step": "train",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    step = container(job)
    assert step["command"] == [
        "python",
        "-m",
        "mlyard.runtime",
        TASK_URI,
        "--endpoint-url",
        "http://s3.example.com:8333",
        "--store-log",
    ]
    assert step["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "500m", "memory": "2Gi"},
    }
    assert {"name": "MLYARD_SEED", "value": "7"} in step["env"]
    assert "tolerations" not in spec["template"]["spec"]


def test_credentials_come_from_the_secret_by_reference_only() -> None:
    [job] = render(Resources(), artifact_credentials_secret="s3-credentials")
    validate([job])
    assert container(job)["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in str(job)


def test_a_gpu_step_tolerates_the_gpu_taint_and_asks_for_the_product() -> None:
    [job] = render(
        Resources(gpus=2, gpu_type="a100", gpu_memory="40GB"),
        node_selector={"pool": "gpu"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        image_pull_secrets=["registry"],
        service_account="mlyard-steps",
        priority_class="batch-low",
        kueue_queue="team-a",
    )
    validate([job])
    pod = job["spec"]["template"]["spec"]
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container(job)["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"]
    )
    assert {"key": "dedicated", "operator": "Equal", "value": "ml"} in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expressions = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expressions[0]["key"] == "nvidia.com/gpu.product"
    assert "NVIDIA-A100-SXM4-80GB" in expressions[0]["values"]
    assert expressions[1] == {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["38146"]}
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["serviceAccountName"] == "mlyard-steps"
    assert pod["priorityClassName"] == "batch-low"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True


@pytest.mark.parametrize(
    ("fields", "resources"),
    [
        ({"gpu_sharing": "time-slicing"}, Resources(gpus=0.5)),
        ({"gpu_sharing": "mig", "mig_profiles": ["1g.10gb", "7g.80gb"]}, Resources(gpus=0.1)),
        ({"gpu_sharing": "nvshare"}, Resources(gpus=0.5)),
        ({"gpu_sharing": "hami"}, Resources(gpus=0.5, gpu_memory="8GiB")),
    ],
)
def test_every_sharing_mode_makes_valid_jobs(fields: dict[str, Any], resources: Resources) -> None:
    validate(render(resources, **fields))


def test_dra_adds_a_resource_claim_template_the_pod_claims() -> None:
    manifests = render(Resources(gpus=1, gpu_memory="40GiB"), gpu_sharing="dra")
    validate(manifests)
    template, job = manifests
    assert template["apiVersion"] == "resource.k8s.io/v1"
    assert template["kind"] == "ResourceClaimTemplate"
    pod = job["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [
        {"name": "gpu", "resourceClaimTemplateName": template["metadata"]["name"]}
    ]
    assert container(job)["resources"]["claims"] == [{"name": "gpu"}]
    assert "nvidia.com/gpu" not in container(job)["resources"]["limits"]


def test_a_multi_node_torchrun_step_is_an_indexed_job_with_a_headless_service() -> None:
    manifests = render(Resources(nodes=3, gpus=2, launcher="torchrun"))
    validate(manifests)
    service, job = manifests
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"]["mlyard.io/attempt-id"] == "r1.2.1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    command = container(job)["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    assert "--nnodes=3" in command and "--nproc-per-node=2" in command
    assert "--rdzv-endpoint=mlyard-r1-2-1-0.mlyard-r1-2-1:29500" in command
    assert command[command.index("-m", 3) :][:2] == ["-m", "mlyard.runtime"]


def test_a_one_node_torchrun_step_uses_the_standalone_rendezvous() -> None:
    [job] = render(Resources(gpus=4, launcher="torchrun"))
    validate([job])
    assert "--standalone" in container(job)["command"]
    assert "--nproc-per-node=4" in container(job)["command"]


def test_a_local_artifact_store_is_refused_with_the_fix(tmp_path: Any) -> None:
    settings = load_settings(backends={"gpu": {"type": "kubernetes", "image": "x"}})
    with pytest.raises(ConfigError) as caught:
        create_backend("gpu", settings, ArtifactStore(str(tmp_path / "artifacts")))
    assert "s3://" in str(caught.value) and "artifact_credentials_secret" in str(caught.value)
