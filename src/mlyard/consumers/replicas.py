"""Running consumer workers: one in this process, or ``--replicas N`` processes that share the
consumer group, each with its own GPU share when ``--gpus`` is given."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from dataclasses import dataclass
from types import FrameType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mlyard.consumers.decoders import make_decoder
from mlyard.consumers.fetch import ObjectFetcher
from mlyard.consumers.urls import open_sink, open_source
from mlyard.errors import ConfigError
from mlyard.settings import load_settings


@dataclass(frozen=True)
class ConsumerConfig:
    source: str
    sink: str
    model: str
    dead_letter: str
    decoder: str = "npy"
    batch_size: int = 64
    max_attempts: int = 3
    replicas: int = 1
    gpus: float = 0.0
    metrics_port: int | None = None
    consumer_name: str = ""
    fps: float = 1.0
    max_frames: int = 16


def default_dead_letter(source_url: str) -> str:
    """The source's own location with ``.dead`` appended to its topic or stream."""
    parts = urlsplit(source_url)
    options = dict(parse_qsl(parts.query))
    for key in ("topic", "stream"):
        if key in options and parts.scheme in ("sqlite", "redis", "kafka"):
            kept: dict[str, str] = {key: options[key] + ".dead"}
            return str(urlunsplit(parts._replace(query=urlencode(kept))))
    raise ConfigError(
        f"Say where dead letters of {parts.scheme}:// messages go.",
        hint="Pass --dead-letter URL (e.g. a NATS subject covered by a stream of its own).",
    )


def preflight(config: ConsumerConfig) -> None:
    """Fail at start, clearly, when a broker, the object store or the decoder cannot work."""
    settings = load_settings()
    make_decoder(config.decoder, fps=config.fps, max_frames=config.max_frames)
    ObjectFetcher(settings).check_reachable()
    source = open_source(config.source, "preflight")
    try:
        source.check_reachable()
    finally:
        source.close()
    for url in (config.sink, config.dead_letter):
        sink = open_sink(url)
        try:
            sink.check_reachable()
        finally:
            sink.close()


def run_worker(config: ConsumerConfig, index: int, environment: dict[str, str]) -> None:
    """One worker until SIGTERM/SIGINT; the batch in hand is finished and acknowledged first."""
    os.environ.update(environment)  # CUDA_VISIBLE_DEVICES before any framework loads
    from mlyard.consumers.metrics import serve_metrics
    from mlyard.consumers.model import load_model
    from mlyard.consumers.worker import ConsumerWorker, WorkerOptions

    settings = load_settings()
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    model_name, predict = load_model(settings, config.model)
    name = config.consumer_name or f"{socket.gethostname()}-{os.getpid()}"
    source = open_source(config.source, f"{name}-{index}")
    sink = open_sink(config.sink)
    dead_letters = open_sink(config.dead_letter)
    fetcher = ObjectFetcher(settings)
    if config.metrics_port is not None:
        serve_metrics(config.metrics_port + index)
    worker = ConsumerWorker(
        source=source,
        sink=sink,
        dead_letters=dead_letters,
        fetcher=fetcher,
        decode=make_decoder(config.decoder, fps=config.fps, max_frames=config.max_frames),
        model_name=model_name,
        predict=predict,
        options=WorkerOptions(batch_size=config.batch_size, max_attempts=config.max_attempts),
    )
    try:
        worker.run(stop)
    finally:
        for closable in (source, sink, dead_letters, fetcher):
            closable.close()


def run_consumers(config: ConsumerConfig) -> int:
    """Run ``config.replicas`` workers until stopped; returns the exit code."""
    preflight(config)
    environments: list[dict[str, str]] = [{} for _ in range(config.replicas)]
    release = None
    if config.gpus > 0:
        from mlyard.serving.replicas import lease_devices

        environments, release = lease_devices(config.gpus, config.replicas)
    try:
        if config.replicas == 1:
            run_worker(config, 0, environments[0])
            return 0
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=run_worker, args=(config, index, environments[index]))
            for index in range(config.replicas)
        ]
        for process in processes:
            process.start()

        def forward(signum: int, _frame: FrameType | None) -> None:
            for process in processes:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for process in processes:
            process.join()
        return max((abs(p.exitcode or 0) for p in processes), default=0)
    finally:
        if release is not None:
            release()
