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
        consumer_name: str = typer.Option("", "--consumer-name"),
        fps: float = typer.Option(1.0, "--fps", help="Video frames sampled per second."),
        max_frames: int = typer.Option(16, "--max-frames", help="Video frames per object."),
    ) -> None:
        """Consume messages naming objects, run the model on them in batches, publish results.

        At-least-once: a message is acknowledged only after its result was published; a
        message that fails --max-attempts times, or is malformed, goes to the dead letters.
        """
        from mlyard.consumers.options import ConsumerConfig, default_dead_letter
        from mlyard.consumers.replicas import run_consumers

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
            consumer_name=consumer_name,
            fps=fps,
            max_frames=max_frames,
        )
        code = run_consumers(config)
        if code:
            raise typer.Exit(code)
