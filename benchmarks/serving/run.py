"""Serving benchmark: mlyard serve against `mlflow models serve` and a per-request FastAPI endpoint.

One command: ``.venv/bin/python benchmarks/serving/run.py`` (``--help`` for load options).
It registers one model (LogisticRegression on scikit-learn's digits) in a temporary SQLite MLflow
store, starts each server in turn on a free loopback port with one worker, drives it with the same
closed-loop load (N keep-alive connections, one-row requests), then measures an image-sized
tensor sent as JSON, as binary over HTTP and over gRPC to one mlyard server (tensor_bench.py), and
replaces the "## Serving" section of benchmarks/RESULTS.md with both tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import tensor_bench
from load import LoadResult, run_load

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "RESULTS.md"
MODEL_NAME = "digits-bench"
# Starts `mlyard serve` whether or not the serve command is registered in the CLI yet.
MLYARD_LAUNCHER = (
    "from mlyard.cli import main, serve\n"
    "main._register_commands()\n"
    "if 'serve' not in main.COMMAND_MODULES: serve.register(main.app)\n"
    "main.app()\n"
)


@dataclass(frozen=True)
class Contender:
    label: str
    command: list[str]
    ready_path: str
    path: str
    body: bytes


def build_model(store: Path) -> str:
    """Register the benchmark model; the tracking URI of the store."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("bench", artifact_location=str(store / "artifacts"))
    features, labels = load_digits(return_X_y=True)
    classifier = LogisticRegression(max_iter=300).fit(features, labels)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            classifier,
            name="model",
            signature=infer_signature(features, classifier.predict(features)),
            registered_model_name=MODEL_NAME,
            pip_requirements=[],  # saves MLflow a process that works them out
        )
    return uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def contenders(row: list[float], port: int, python: str) -> list[Contender]:
    model_uri = f"models:/{MODEL_NAME}/1"
    instances = json.dumps({"instances": [row]}).encode()
    v2 = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": row}]}
    ).encode()
    mlyard = [python, "-c", MLYARD_LAUNCHER, "serve", model_uri, "--port", str(port)]
    return [
        Contender(
            "mlflow models serve (--env-manager local)",
            [
                python,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            "/ping",
            "/invocations",
            json.dumps({"inputs": [row]}).encode(),
        ),
        Contender(
            "minimal FastAPI, model per request",
            [python, str(HERE / "naive_server.py"), model_uri, str(port)],
            "/openapi.json",
            "/predict",
            instances,
        ),
        Contender(
            "mlyard serve, batching off (--max-batch-size 1)",
            [*mlyard, "--max-batch-size", "1"],
            "/v2/health/ready",
            "/predict",
            instances,
        ),
        Contender(
            "mlyard serve, batching on, POST /predict",
            mlyard,
            "/v2/health/ready",
            "/predict",
            instances,
        ),
        Contender(
            "mlyard serve, batching on, POST /v2/.../infer",
            mlyard,
            "/v2/health/ready",
            f"/v2/models/{MODEL_NAME}/infer",
            v2,
        ),
    ]


def wait_ready(process: subprocess.Popen[bytes], port: int, path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server not ready after 120 s")


def measure(
    contender: Contender, port: int, env: dict[str, str], args: argparse.Namespace, log: Path
) -> LoadResult:
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            contender.command,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(process, port, contender.ready_path)
            # Several rounds against the same server; the best one counts, since on a shared
            # machine a round is only ever slowed down by other work, never sped up.
            rounds = [
                run_load(
                    "127.0.0.1",
                    port,
                    contender.path,
                    contender.body,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                )
                for _ in range(args.rounds)
            ]
            return max(rounds, key=lambda result: result.requests_per_second)
        except RuntimeError:
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it has not exited after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    cpu = found.group(1).strip() if found else platform.processor()
    return (
        f"{cpu}, {os.cpu_count()} cores (shared), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, no GPU"
    )


TENSOR_HEADING = "### An image-sized tensor: JSON, binary over HTTP, gRPC\n"


def servers_part(table: str, args: argparse.Namespace) -> str:
    """The Serving section's first part: the servers compared on one-row requests."""
    return (
        "## Serving\n\n"
        f"Command: `.venv/bin/python benchmarks/serving/run.py --concurrency {args.concurrency} "
        f"--seconds {args.seconds} --rounds {args.rounds}`  \n"
        f"Machine: {machine()}  \n"
        f"Model: scikit-learn LogisticRegression on digits (64 FP64 features), registered in a "
        f"SQLite MLflow store; one-row requests from {args.concurrency} keep-alive connections "
        f"(closed loop, load generator on the same machine); each server gets {args.rounds} "
        f"rounds of {args.seconds} s measured after 2 s of warm-up, and its best round is shown; "
        "every server runs one worker process under uvicorn (with httptools and "
        "uvloop installed, which all three pick up). The machine is shared with other work, so "
        "single rounds move by 15 % or more; the ratios hold.\n\n"
        f"{table}\n"
    )


def tensor_part(table: str, args: argparse.Namespace) -> str:
    """The Serving section's image-tensor table with what it measured."""
    only = " --only tensor" if args.only == "tensor" else ""
    return (
        f"{TENSOR_HEADING}\n"
        f"Command: `.venv/bin/python benchmarks/serving/run.py{only} --seconds {args.seconds} "
        f"--rounds {args.rounds} --tensor-concurrency {args.tensor_concurrency}`  \n"
        f"Machine: {machine()}  \n"
        "One `mlyard serve --grpc-port` on a PyTorch model logged with its signature that "
        "returns the mean of each channel of a 1x3x224x224 FP32 tensor (an image classifier's "
        "input: 602,112 bytes raw); one tensor per request from "
        f"{args.tensor_concurrency} connections (closed loop); the three ways of sending it "
        f"take turns for {args.rounds} rounds of {args.seconds} s after 2 s of warm-up each, "
        "and each shows its best round. Request bodies are built before the clock starts: JSON "
        "`data` is the flat list of the tensor's values (what `tolist()` gives a client, about "
        "3 MB), binary is a JSON header and the raw bytes with `Inference-Header-Content-Length` "
        "(what `tritonclient.http` sends by default), gRPC a ModelInfer with "
        "`raw_input_contents`. Every answer is checked before timing starts. Target: binary at "
        "least 5x the JSON throughput.\n\n"
        f"{table}\n"
    )


def write_results(servers: str | None, tensor: str | None) -> None:
    """Replace the parts of the Serving section that were measured; keep the others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(r"^## Serving\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    old = found.group(0) if found else ""
    old_servers, _, old_tensor = old.partition(TENSOR_HEADING)
    if servers is None:
        servers = old_servers or "## Serving\n"
    if tensor is None and old_tensor:
        tensor = TENSOR_HEADING + old_tensor
    parts = [servers.rstrip()] + ([tensor.rstrip()] if tensor else [])
    section = "\n\n".join(parts) + "\n\n"
    text = (
        text[: found.start()] + section + text[found.end() :]
        if found
        else text.rstrip() + "\n\n" + section
    )
    RESULTS.write_text(text)


def measure_tensor(env: dict[str, str], args: argparse.Namespace, log: Path) -> str:
    """The image-tensor table: one mlyard server, three transports in alternating rounds."""
    port, grpc_port = free_port(), free_port()
    command = tensor_bench.server_command(sys.executable, MLYARD_LAUNCHER, port, grpc_port)
    print("measuring a 1x3x224x224 FP32 tensor as JSON, binary and gRPC ...", flush=True)
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(process, port, "/v2/health/ready")
            results = tensor_bench.measure_transports(
                port,
                grpc_port,
                concurrency=args.tensor_concurrency,
                seconds=args.seconds,
                rounds=args.rounds,
            )
        except (RuntimeError, AssertionError):
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop(process)
    baseline = results[0][1].requests_per_second
    lines = [
        "| sent as | requests/s | p50 ms | p99 ms | errors | tensor MB/s | vs JSON |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    raw_mb = 4 * int(np.prod(tensor_bench.SHAPE)) / 1e6
    for label, result in results:
        rate = result.requests_per_second
        print(f"  {label}: {rate:.0f} req/s, p99 {result.p99_ms:.1f} ms", flush=True)
        lines.append(
            f"| {label} | {rate:.0f} | {result.p50_ms:.1f} | {result.p99_ms:.1f} | "
            f"{result.errors} | {rate * raw_mb:.0f} | {rate / baseline:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of one round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per server; best counts.")
    parser.add_argument(
        "--tensor-concurrency", type=int, default=8, help="Connections for the image tensor."
    )
    parser.add_argument(
        "--only",
        choices=["servers", "tensor"],
        help="Run one part; only its table in RESULTS.md is replaced.",
    )
    parser.add_argument("--no-write", action="store_true", help="Do not touch RESULTS.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlyard-bench-serving-") as tmp:
        store = Path(tmp)
        uri = build_model(store)
        import mlflow

        tensor_bench.build_image_model(mlflow.get_experiment_by_name("bench").experiment_id)
        from sklearn.datasets import load_digits

        row = [float(v) for v in load_digits().data[0]]
        # `mlflow models serve` execs `uvicorn` from PATH: put this interpreter's bin dir first.
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_REGISTRY_URI": uri,
            "MLYARD_TRACKING__URI": uri,
            "MLYARD_HOME": str(store / "home"),
        }
        rows: list[tuple[str, LoadResult]] = []
        tensor_table = ""
        if args.only != "servers":
            tensor_table = measure_tensor(env, args, store / "tensor.log")
        for index in range(len(contenders(row, 0, sys.executable)) if args.only != "tensor" else 0):
            # A fresh port each time: a server that is still exiting must not answer for the next.
            port = free_port()
            contender = contenders(row, port, sys.executable)[index]
            print(f"measuring {contender.label} ...", flush=True)
            result = measure(contender, port, env, args, store / f"{len(rows)}.log")
            rows.append((contender.label, result))
            print(
                f"  {result.requests_per_second:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms, {result.errors} errors",
                flush=True,
            )
    if args.only == "tensor":
        print(tensor_table)
        if not args.no_write:
            write_results(None, tensor_part(tensor_table, args))
        return
    baseline = rows[0][1].requests_per_second
    lines = [
        "| server | requests/s | p50 ms | p99 ms | errors | vs mlflow |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, result in rows:
        lines.append(
            f"| {label} | {result.requests_per_second:.0f} | {result.p50_ms:.1f} | "
            f"{result.p99_ms:.1f} | {result.errors} | "
            f"{result.requests_per_second / baseline:.1f}x |"
        )
    table = "\n".join(lines)
    print(table)
    print(tensor_table)
    if not args.no_write:
        write_results(
            servers_part(table, args), tensor_part(tensor_table, args) if tensor_table else None
        )


if __name__ == "__main__":
    main()
