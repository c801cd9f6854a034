"""Running consumer workers: one in this process, or ``--replicas N`` processes that share the
consumer group, each with its own GPU share when ``--gpus`` is given."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from types import FrameType

from mlyard.consumers.decoders import make_decoder
from mlyard.consumers.fetch import ObjectFetcher
from mlyard.consumers.model import NOOP_MODEL
from mlyard.consumers.options import ConsumerConfig
from mlyard.consumers.urls import broker_extras, open_sink, open_source
from mlyard.errors import MlyardError
from mlyard.extras import require_extra
from mlyard.settings import load_settings


def preflight(config: ConsumerConfig) -> None:
    """Fail at start, clearly, when a broker, the object store or the decoder cannot work."""
    settings = load_settings()
    make_decoder(config.decoder, fps=config.fps, max_frames=config.max_frames)
    if config.model != NOOP_MODEL:
        # An unknown model or alias fails here, listing what exists, before any replica starts.
        from mlyard.services.models import resolve_model_uri

        resolve_model_uri(settings, config.model)
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
    device = "cuda" if config.gpus > 0 else "cpu"
    model_name, predict = load_model(settings, config.model, device)
    name = config.consumer_name or f"{socket.gethostname()}-{os.getpid()}"
    source = open_source(config.source, f"{name}-{index}")
    sink = open_sink(config.sink)
    dead_letters = open_sink(config.dead_letter)
    fetcher = ObjectFetcher(settings)
    if config.metrics_port is not None:
        serve_metrics(config.metrics_port + index, config.metrics_host)
    worker = ConsumerWorker(
        source=source,
        sink=sink,
        dead_letters=dead_letters,
        fetcher=fetcher,
        decode=make_decoder(config.decoder, fps=config.fps, max_frames=config.max_frames),
        model_name=model_name,
        predict=predict,
        options=WorkerOptions(
            batch_size=config.batch_size,
            max_wait=config.max_wait,
            max_attempts=config.max_attempts,
        ),
    )
    try:
        worker.run(stop)
    finally:
        for closable in (source, sink, dead_letters, fetcher):
            closable.close()


def run_consumers(config: ConsumerConfig) -> int:
    """Run ``config.replicas`` workers until stopped; returns the exit code."""
    # Every extra the command, its brokers and its decoder need, named in one message.
    extras = broker_extras(config.source, config.sink, config.dead_letter)
    if config.decoder == "video":
        extras.append("video")
    require_extra("consume", *extras, needed_by="mlyard consume")
    preflight(config)
    from mlyard.serving.replicas import lease_devices

    # Each replica's CUDA_VISIBLE_DEVICES: its leased share, or none without --gpus.
    environments, release = lease_devices(
        config.gpus, config.replicas, requester="Each consumer replica"
    )
    try:
        if config.replicas == 1:
            run_worker(config, 0, environments[0])
            return 0
        return _run_replicas(config, environments)
    finally:
        release()


def _run_replicas(config: ConsumerConfig, environments: list[dict[str, str]]) -> int:
    """Start one process per replica; stop all of them once one fails or a signal came."""
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_replica_main, args=(config, index, environments[index], os.getpid())
        )
        for index in range(config.replicas)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    # Installed before the children start, so an early SIGTERM is not lost.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.start()
    running = list(processes)
    while running:
        wait([process.sentinel for process in running])
        for process in [p for p in running if not p.is_alive()]:
            running.remove(process)
            if process.exitcode:  # a replica failed: the others stop after their batch
                forward(signal.SIGTERM, None)
    for process in processes:
        process.join()
    return max((abs(p.exitcode or 0) for p in processes), default=0)


def _replica_main(
    config: ConsumerConfig, index: int, environment: dict[str, str], supervisor: int
) -> None:
    """A replica process: an ``MlyardError`` becomes its message on stderr and exit code 1."""
    import sys

    from mlyard.platform.supervision import stop_when_orphaned

    try:
        stop_when_orphaned(supervisor)  # SIGTERM before the worker's handler: nothing in hand
        run_worker(config, index, environment)
    except MlyardError as error:
        hint = f"\n{error.hint}" if error.hint else ""
        print(f"Error (replica {index}): {error.message}{hint}", file=sys.stderr)
        sys.exit(1)
