"""The objects of a service on the cluster, built from a ServiceSpec without a cluster: valid
against the official schema, with probes, ports, scrape annotations, the GPU translation of the
profile's gpu_sharing, and every Secret referenced, never inlined."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
import yaml

from mlyard.backends.kubernetes.credentials import carries_credentials, redact
from mlyard.backends.kubernetes.service_manifests import (
    ServiceSpec,
    credentials_secret_manifest,
    secrets_note,
    split_credentials,
    token_secret_manifest,
)
from mlyard.backends.kubernetes.services import KubernetesServices
from mlyard.consumers.options import ConsumerConfig
from mlyard.models.resources import Resources
from mlyard.services.deployments import consumer_spec
from mlyard.settings import load_settings
from tests.unit.backends.kubernetes.test_manifests import backend, validate

PASSWORD = "s3cret-Pa55"
SOURCE = f"redis://:{PASSWORD}@redis.example.com:6379/0?stream=in&group=g"
SINK = f"kafka://alice:{PASSWORD}@kafka.example.com:9092?topic=out"
TRACKING = f"https://bob:{PASSWORD}@mlflow.example.com"


def server(**fields: Any) -> ServiceSpec:
    """A server's spec as ``deployments.server_spec`` makes it (which resolves the model)."""
    values: dict[str, Any] = {
        "name": "digits",
        "kind": "server",
        "model": "models:/Digits/3",
        "replicas": 2,
        "resources": Resources(),
        "arguments": ["-m", "mlyard.cli", "serve", "models:/Digits/3", "--host",
                      "$(MLYARD_POD_IP)", "--port", "8080", "--grpc-port", "8081"],
        "ports": {"http": 8080, "grpc": 8081},
        "probe_port": "http",
        "ready_path": "/v2/health/ready",
        "live_path": "/v2/health/live",
        "environment": {"MLYARD_STORAGE__ARTIFACTS": "s3://models/prod"},
        "uses_token": True,
    }  # fmt: skip
    values.update(fields)
    return ServiceSpec(**values)


def consumer(source: str = SOURCE, sink: str = SINK, tracking: str = TRACKING) -> ServiceSpec:
    """The spec ``mlyard consume --backend`` makes, from the settings and options."""
    settings = load_settings(tracking={"uri": tracking})
    config = ConsumerConfig(
        source=source, sink=sink, model="noop", dead_letter=f"{source}.dead", replicas=3
    )
    return consumer_spec(settings, config, None)


def manifests(spec: ServiceSpec, **profile: Any) -> dict[str, dict[str, Any]]:
    services = KubernetesServices(backend(namespace="ml", **profile))
    rendered = services.manifests(spec, offline=True)
    validate(rendered)
    return {m["kind"]: m for m in rendered}


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {
        v["name"]: v.get("value", v.get("valueFrom"))
        for v in pod(deployment)["containers"][0]["env"]
    }


def test_a_server_is_a_deployment_with_probes_and_a_cluster_ip_service() -> None:
    objects = manifests(server())
    assert list(objects) == ["Deployment", "Service"]
    deployment, service = objects["Deployment"], objects["Service"]
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["metadata"]["labels"]
    assert labels["mlyard.io/service"] == "digits" and labels["mlyard.io/service-kind"] == "server"
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "mlyard",
        "mlyard.io/service": "digits",
    }
    container = pod(deployment)["containers"][0]
    assert container["name"] == "server"
    assert container["command"][:3] == ["python", "-m", "mlyard.cli"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", 8080),
        ("grpc", 8081),
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # The startup probe holds liveness off for the model's load.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/live"
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600
    assert pod(deployment)["restartPolicy"] == "Always"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["mlyard.io/model"] == "models:/Digits/3"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 8080, "http"),
        ("grpc", 8081, "grpc"),
    ]
    variables = env(deployment)
    assert variables["MLYARD_POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert variables["MLYARD_SERVE_TOKEN"] == {
        "secretKeyRef": {"name": "digits-token", "key": "token"}
    }
    assert variables["MLYARD_STORAGE__ARTIFACTS"] == "s3://models/prod"
    assert "MLYARD_GPUS_ASSIGNED" not in variables


def test_the_token_secret_is_referenced_and_holds_the_token() -> None:
    spec = server()
    secret = token_secret_manifest(spec, "gpu", "ml", "tok-123")
    validate([secret])
    assert secret["metadata"]["name"] == "digits-token"
    assert secret["stringData"] == {"token": "tok-123"}
    assert secret["metadata"]["labels"]["mlyard.io/service"] == "digits"
    assert "tok-123" not in json.dumps(manifests(spec))
    assert credentials_secret_manifest(spec, "gpu", "ml") is None  # no credentials to hold


def test_a_consumer_has_metrics_probes_and_no_service() -> None:
    objects = manifests(consumer(source="sqlite:///q.db?topic=in", sink="sqlite:///q.db?topic=o",
                                 tracking="sqlite:///mlflow.db"))  # fmt: skip
    assert list(objects) == ["Deployment"]
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    container = pod(deployment)["containers"][0]
    assert container["name"] == "consumer"
    assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9090"
    command = container["command"]
    assert command[command.index("--source") + 1] == "sqlite:///q.db?topic=in"  # no credentials
    assert command[command.index("--consumer-name") + 1] == "$(MLYARD_POD_NAME)"
    assert env(deployment)["MLYARD_TRACKING__URI"] == "sqlite:///mlflow.db"


def test_urls_with_credentials_go_into_the_credentials_secret() -> None:
    spec = consumer()
    objects = manifests(spec)
    assert PASSWORD not in json.dumps(objects)
    container = pod(objects["Deployment"])["containers"][0]
    command = container["command"]
    assert command[command.index("--source") + 1] == "$(MLYARD_SECRET_SOURCE)"
    assert command[command.index("--sink") + 1] == "$(MLYARD_SECRET_SINK)"
    assert command[command.index("--dead-letter") + 1] == "$(MLYARD_SECRET_DEAD_LETTER)"
    variables = env(objects["Deployment"])
    for name in ("MLYARD_SECRET_SOURCE", "MLYARD_SECRET_SINK", "MLYARD_TRACKING__URI"):
        assert variables[name] == {
            "secretKeyRef": {"name": "noop-consumer-credentials", "key": name}
        }
    secret = credentials_secret_manifest(spec, "gpu", "ml")
    assert secret is not None
    validate([secret])
    assert secret["metadata"]["labels"]["mlyard.io/service"] == "noop-consumer"
    assert secret["stringData"] == {
        "MLYARD_SECRET_DEAD_LETTER": f"{SOURCE}.dead",
        "MLYARD_SECRET_SINK": SINK,
        "MLYARD_SECRET_SOURCE": SOURCE,
        "MLYARD_TRACKING__URI": TRACKING,
    }


def test_the_dry_run_note_says_how_to_make_the_secrets_without_their_values() -> None:
    spec = consumer()
    note = secrets_note(spec, "ml")
    assert PASSWORD not in note
    assert all(line.startswith("#") for line in note.splitlines())
    assert yaml.safe_load(note) is None  # comments only: the output still applies
    command = next(line for line in note.splitlines() if "kubectl" in line)
    words = shlex.split(command.lstrip("# "))
    assert words[:6] == ["kubectl", "-n", "ml", "create", "secret", "generic"]
    assert words[6] == "noop-consumer-credentials"
    assert f"--from-literal=MLYARD_SECRET_SOURCE={redact(SOURCE)}" in words
    assert "--from-literal=MLYARD_TRACKING__URI=https://bob:***@mlflow.example.com" in words
    assert "token" not in note  # a consumer has no serving token
    assert "create secret generic digits-token" in secrets_note(server(), "ml")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0?stream=s", "redis://:***@host:6379/0?stream=s"),
        ("nats://user:pw@host:4222?stream=S", "nats://user:***@host:4222?stream=S"),
        ("https://TOKEN@mlflow.example.com/", "https://***@mlflow.example.com/"),
        (
            "kafka://host:9092?topic=t&sasl_password=pw",
            "kafka://host:9092?topic=t&sasl_password=***",
        ),
        ("postgresql://me:pw@db/mlflow", "postgresql://me:***@db/mlflow"),
    ],
)
def test_credentials_are_recognised_and_redacted(url: str, shown: str) -> None:
    assert carries_credentials(url)
    assert redact(url) == shown


@pytest.mark.parametrize(
    "value", ["sqlite:///q.db?topic=in", "s3://bucket/prefix", "models:/Digits/3", "8080",
              "redis://host:6379/0?stream=in&group=g", "$(MLYARD_POD_IP)", "us-east-1"],
)  # fmt: skip
def test_values_without_credentials_stay_plain(value: str) -> None:
    assert not carries_credentials(value)
    assert redact(value) == value


def test_an_unparsable_url_is_kept_secret() -> None:
    assert carries_credentials("redis://[::1:6379")
    assert redact("redis://[::1:6379") == "***"


def test_a_positional_credential_and_a_repeated_option_get_their_own_variables() -> None:
    spec = server(arguments=["-m", "x", "https://t@a.example.com", "--url", "https://u:p@b",
                             "--url", "https://u:q@c"])  # fmt: skip
    split = split_credentials(spec)
    assert split.arguments == [
        "-m",
        "x",
        "$(MLYARD_SECRET_ARG_2)",
        "--url",
        "$(MLYARD_SECRET_URL)",
        "--url",
        "$(MLYARD_SECRET_URL_6)",
    ]
    assert split.secret == {
        "MLYARD_SECRET_ARG_2": "https://t@a.example.com",
        "MLYARD_SECRET_URL": "https://u:p@b",
        "MLYARD_SECRET_URL_6": "https://u:q@c",
    }


def test_a_model_uri_with_credentials_is_redacted_in_the_annotations() -> None:
    objects = manifests(server(model=f"https://me:{PASSWORD}@models.example.com/m.onnx"))
    assert PASSWORD not in json.dumps(objects)
    annotations = objects["Deployment"]["metadata"]["annotations"]
    assert annotations["mlyard.io/model"] == "https://me:***@models.example.com/m.onnx"


@pytest.mark.parametrize(
    ("profile", "gpus", "expected"),
    [
        ({}, 1.0, {"nvidia.com/gpu": "1"}),
        ({"gpu_sharing": "time-slicing", "shared_gpu_resource": "nvidia.com/gpu.shared"}, 0.5,
         {"nvidia.com/gpu.shared": "2"}),
        ({"gpu_sharing": "nvshare"}, 0.25, {"nvshare.com/gpu": "1"}),
        ({"gpu_sharing": "hami"}, 0.5, {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "50",
                                        "nvidia.com/gpumem-percentage": "50"}),
        ({"gpu_sharing": "mig", "mig_profiles": ["1g.10gb", "3g.40gb", "7g.80gb"]}, 0.4,
         {"nvidia.com/mig-3g.40gb": "1"}),
    ],
)  # fmt: skip
def test_a_replica_s_gpu_share_is_translated_by_the_profile(
    profile: dict[str, Any], gpus: float, expected: dict[str, str]
) -> None:
    deployment = manifests(server(resources=Resources(gpus=gpus)), **profile)["Deployment"]
    resources = pod(deployment)["containers"][0]["resources"]
    for name, quantity in expected.items():
        assert resources["limits"][name] == quantity == resources["requests"][name]
    assert env(deployment)["MLYARD_GPUS_ASSIGNED"] == "1"
    tolerations = pod(deployment)["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert deployment["metadata"]["annotations"]["mlyard.io/gpus"] != "none"


def test_dra_adds_a_claim_template_before_the_deployment() -> None:
    objects = manifests(server(resources=Resources(gpus=1, gpu_memory="40GB")), gpu_sharing="dra")
    assert list(objects) == ["ResourceClaimTemplate", "Deployment", "Service"]
    claims = pod(objects["Deployment"])["resourceClaims"]
    assert (
        claims[0]["resourceClaimTemplateName"]
        == objects["ResourceClaimTemplate"]["metadata"]["name"]
    )


def test_a_fraction_on_an_exclusive_cluster_is_refused() -> None:
    from mlyard.errors import MlyardError

    with pytest.raises(MlyardError, match="gpu_sharing"):
        KubernetesServices(backend()).manifests(server(resources=Resources(gpus=0.5)), offline=True)
