"""``mlyard consume``: event-driven inference workers."""

from __future__ import annotations

import typer

from mlyard.cli.errors import handle_errors


def register(app: typer.Typer) -> None:
    @app.command("consume")
    @handle_errors
    def consume_command(
        source: str = typer.Option(
            ...,
            "--source",
            help="Where messages come from: sqlite:///queue.db?topic=in (the embedded queue), "
            "redis://host:6379/0?stream=in&group=g, nats://host:4222?stream=S&subject=in&"
            "durable=d or kafka://host:9092?topic=in&group=g.",
        ),
        sink: str = typer.Option(..., "--sink", help="Where results go (same URL forms)."),
        model: str = typer.Option(
            ..., "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… or noop."
        ),
        dead_letter: str | None = typer.Option(
            None, "--dead-letter", help="Where failed messages go; default: <topic>.dead."
        ),
        decoder: str = typer.Option(
            "npy", "--decoder", help="npy, raw, image, video or module:function."
        ),
        batch_size: int = typer.Option(
            64, "--batch-size", min=1, help="Most messages per receive and inputs per model call."
        ),
        max_wait: float = typer.Option(
            0.05, "--max-wait", min=0, help="Seconds to wait for more messages to fill a batch."
        ),
        max_attempts: int = typer.Option(
            3, "--max-attempts", min=1, help="Deliveries before a failing message is dead-lettered."
        ),
        replicas: int = typer.Option(1, "--replicas", "--workers", min=1),
        gpus: float = typer.Option(0.0, "--gpus", min=0, help="GPU share per replica."),
        metrics_port: int | None = typer.Option(
            None, "--metrics-port", help="Prometheus metrics on 127.0.0.1:PORT (+i per replica)."
        ),
        metrics_host: str = typer.Option(
            "127.0.0.1", "--metrics-host", help="Address the metrics are served on."
        ),
        consumer_name: str = typer.Option("", "--consumer-name"),
        fps: float = typer.Option(1.0, "--fps", help="Video frames sampled per second."),
        max_frames: int = typer.Option(16, "--max-frames", help="Video frames per object."),
        backend: str | None = typer.Option(
            None,
            "--backend",
            "-b",
            help="Run the workers as a service on this backend profile (kubernetes: a "
            "Deployment of --replicas pods); default: here, in the foreground.",
        ),
        name: str | None = typer.Option(
            None,
            "--name",
            help=(
                "The service's name (DNS-1123); default: MODEL-consumer, numbered (-2, -3) "
                "where one runs already on this machine."
            ),
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="With a kubernetes --backend: print the manifests (YAML)."
        ),
    ) -> None:
        """Consume messages naming objects, run the model on them in batches, publish results.

        At-least-once: a message is acknowledged only after its result was published; a
        message that fails --max-attempts times, or is malformed, goes to the dead letters.
        """
        from mlyard.cli.serve import deploy_on_cluster, runs_on_cluster
        from mlyard.consumers.options import ConsumerConfig, default_dead_letter
        from mlyard.settings import load_settings

        config = ConsumerConfig(
            source=source,
            sink=sink,
            model=model,
            dead_letter=dead_letter or default_dead_letter(source),
            decoder=decoder,
            batch_size=batch_size,
            max_wait=max_wait,
            max_attempts=max_attempts,
            replicas=replicas,
            gpus=gpus,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            consumer_name=consumer_name,
            fps=fps,
            max_frames=max_frames,
        )
        settings = load_settings()
        if runs_on_cluster(settings, backend, dry_run):
            assert backend is not None
            deploy_on_cluster(settings, backend, name, dry_run, consumer=config)
            return
        from mlyard.consumers.replicas import run_consumers
        from mlyard.services.local_services import registered_service

        with registered_service(
            settings,
            name=name,
            kind="consumer",
            model=model,
            replicas=replicas,
            gpus=gpus,
            address=source,
        ):
            code = run_consumers(config)
        if code:
            raise typer.Exit(code)
