"""Kubernetes backend benchmarks, on the fake API server (tests/kubefake) with a SeaweedFS store.

    .venv/bin/python benchmarks/kubernetes/run.py [--repeats 5] [--fanout 50]

1. API requests: per submit, and per status poll with 1 and with ``--fanout`` concurrent steps
   (a fan-out pipeline followed to its end): a poll must cost the same whatever the number of
   steps (one list of Jobs, one of Pods).
2. Per-step orchestration overhead: the wall time of a trivial one-step pipeline on the fake
   cluster beside the local backend, alternated in one run (median of ``--repeats``). The fake's
   kubelet starts the pod's command as a local process, so the difference is what the backend
   adds: manifests, API round trips, polling, and the pod's process start (no fork server).

Starts kube-fake and seaweedfs with scripts/services (like the tests), stops them at the end,
and replaces the "## Kubernetes backend" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from tests.servicekit import start_service, stop_service  # noqa: E402

SECTION = "## Kubernetes backend"
SECRET = "s3-credentials"
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def settings_for(kube: dict[str, str], s3: dict[str, str], home: Path) -> Any:
    from mlyard.settings import BackendProfile, Settings, StorageSettings, TrackingSettings

    profile = BackendProfile.model_validate(
        {
            "type": "kubernetes",
            "kubeconfig": kube["KUBECONFIG"],
            "context": "fake",
            "namespace": "mlyard",
            "image": "registry.example.com/mlyard:bench",
            "artifact_credentials_secret": SECRET,
        }
    )
    return Settings(
        home=home,
        tracking=TrackingSettings(uri="none"),
        storage=StorageSettings(
            artifacts=f"s3://{s3['S3_BUCKET']}/bench-{uuid.uuid4().hex[:8]}",
            endpoint_url=s3["S3_ENDPOINT_URL"],
        ),
        backends={"cluster": profile, "local": BackendProfile(type="local")},
    )


def create_secret(kube: dict[str, str], s3: dict[str, str]) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=kube["KUBECONFIG"], context="fake")
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": {key: s3[key] for key in S3_VARIABLES},
    }
    client.CoreV1Api(api_client).create_namespaced_secret("mlyard", body)
    api_client.close()


def run_pipeline(
    settings: Any, pipeline: Any, backend_name: str, **params: Any
) -> tuple[float, Any, dict[str, Any]]:
    """Wall seconds of one uncached run, its view, and the API requests it made by kind."""
    from mlyard.backends.kubernetes.backend import KubernetesBackend
    from mlyard.orchestration.loading import loaded_from_function
    from mlyard.services.runs import Workspace, execute_run, prepare_run, show_run

    workspace = Workspace.open(settings)
    counts: dict[str, Any] = {"submits": 0, "submit_requests": 0, "polls": []}
    started = time.perf_counter()
    try:
        run_id, backend = prepare_run(
            workspace,
            loaded_from_function(pipeline),
            params,
            backend_name=backend_name,
            use_cache=False,
        )
        if isinstance(backend, KubernetesBackend):
            original_submit, original_status = backend._submit, backend._status
            api = backend.api

            def counting_submit(task: Any) -> Any:
                before = api.requests
                handle = original_submit(task)
                counts["submits"] += 1
                counts["submit_requests"] += api.requests - before
                return handle

            def counting_status(handles: Any) -> Any:
                before = api.requests
                answer = original_status(handles)
                counts["polls"].append((len(handles), api.requests - before))
                return answer

            backend._submit = counting_submit  # type: ignore[method-assign]
            backend._status = counting_status  # type: ignore[method-assign]
        execute_run(workspace, run_id, backend)
        elapsed = time.perf_counter() - started
        view = show_run(workspace, run_id)
        backend.close()
        return elapsed, view, counts
    finally:
        workspace.close()


def benchmark(
    kube: dict[str, str], s3: dict[str, str], state: Path, repeats: int, fanout: int
) -> list[str]:
    import bench_tasks

    for key in S3_VARIABLES:
        os.environ[key] = s3[key]
    create_secret(kube, s3)
    settings = settings_for(kube, s3, state / "home")
    run_pipeline(settings, bench_tasks.trivial, "local")  # warm both paths once
    run_pipeline(settings, bench_tasks.trivial, "cluster")
    walls: dict[str, list[float]] = {"local": [], "cluster": []}
    for _ in range(repeats):
        for name in ("local", "cluster"):
            elapsed, view, _ = run_pipeline(settings, bench_tasks.trivial, name)
            assert view.state.value == "SUCCEEDED", view
            walls[name].append(elapsed)
    local = statistics.median(walls["local"])
    cluster = statistics.median(walls["cluster"])

    started = time.perf_counter()
    elapsed, view, counts = run_pipeline(settings, bench_tasks.fan_out, "cluster", width=fanout)
    assert view.state.value == "SUCCEEDED", view
    polls = counts["polls"]
    by_size: dict[int, set[int]] = {}
    for size, requests in polls:
        by_size.setdefault(size, set()).add(requests)
    widest = max(by_size)
    del started

    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}"
    )
    return [
        SECTION,
        "",
        "Command: `.venv/bin/python benchmarks/kubernetes/run.py "
        f"--repeats {repeats} --fanout {fanout}`  ",
        f"Machine: {machine}; the fake API server (scripts/services/kube-fake.sh, its kubelet runs "
        "each pod's command as a local process) and SeaweedFS on 127.0.0.1. Peer: the local "
        "backend in the same run, alternated.",
        "",
        f"Trivial one-step pipeline, the user's wait (median of {repeats}):",
        "",
        "| backend | wait | minus local |",
        "|---|---:|---:|",
        f"| local | {local:.2f} s | |",
        f"| kubernetes (fake cluster) | {cluster:.2f} s | {cluster - local:+.2f} s |",
        "",
        f"API requests, fan-out of {fanout} concurrent steps ({fanout + 1} steps, {elapsed:.1f} s "
        "to the end):",
        "",
        "| what | requests |",
        "|---|---:|",
        f"| per submit | {counts['submit_requests'] / max(1, counts['submits']):.1f} |",
        f"| per status poll, 1 step open | {shown(by_size.get(1, set()))} |",
        f"| per status poll, {widest} steps open | {shown(by_size[widest])} |",
        f"| status polls in all | {len(polls)} ({sum(r for _, r in polls)} requests) |",
        "",
        "A poll is one list of the runs' Jobs and one of their Pods by label selector, whatever "
        "the number of open steps; one GET per Job and Pod would be "
        f"{2 * widest} requests per poll at {widest} steps.",
    ]


def shown(values: set[int]) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "-"


def replace_section(results: Path, section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others alone."""
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: section + "\n", current)
    else:
        updated = current.rstrip("\n") + "\n\n" + section
    results.write_text(updated)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fanout", type=int, default=50)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="mlyard-bench-k8s-"))
    try:
        kube = start_service("kube-fake", state / "kube-fake")
        s3 = start_service("seaweedfs", state / "seaweedfs")
        lines = benchmark(kube, s3, state, args.repeats, args.fanout)
    finally:
        stop_service("seaweedfs", state / "seaweedfs")
        stop_service("kube-fake", state / "kube-fake")
        shutil.rmtree(state, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(args.results, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
