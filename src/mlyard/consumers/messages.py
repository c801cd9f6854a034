"""The messages consumers read and the results they publish (the wire format, JSON).

An incoming message names the objects to process::

    {"id": "cam-7/2026-11-24T10:00:00", "objects": ["s3://recordings/cam-7/0001.mp4"],
     "operation": "detect", "data": {...anything the producer adds...}}

``objects`` are artifact-store keys (``sha256:…`` digests or plain keys under the store) or
``s3://`` URIs. The published result is the original message plus the model's output::

    {"operation": "detect", "data": <the original message>, "model": "models:/yolo/3",
     "results": [{"object": "s3://…/0001.mp4", "predictions": [...]}, ...]}

A dead letter is ``{"error": "...", "attempts": n, "data": <original message or its text>}``.

Messages are parsed and results encoded by pydantic-core's JSON functions, in one pass each: a
worker handles tens of thousands of messages a second, and validating through a model class
cost more per message than receiving and acknowledging it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json, to_json


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class EventMessage:
    """A parsed message: what the worker needs, and the original object to echo back."""

    objects: list[str]
    operation: str
    #: The message as the producer sent it (``id``, ``data`` and any other field).
    raw: dict[str, Any]


class MalformedMessageError(ValueError):
    """The message is not JSON or lacks ``objects``: dead-lettered at once, never retried."""


def parse_message(payload: bytes) -> EventMessage:
    """The checked message; ``MalformedMessageError`` says what is wrong with it."""
    try:
        raw = from_json(payload)
    except ValueError as exc:  # invalid JSON or invalid UTF-8
        raise MalformedMessageError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedMessageError("a message must be a JSON object with 'objects'")
    objects = raw.get("objects")
    if not isinstance(objects, list) or not objects or not _all_strings(objects):
        raise MalformedMessageError(
            "'objects' must be a non-empty list of object keys or s3:// URIs"
        )
    operation = raw.get("operation", "predict")
    if not isinstance(operation, str):
        raise MalformedMessageError("'operation' must be a string")
    if not isinstance(raw.get("id", ""), str | None):
        raise MalformedMessageError("'id' must be a string")
    return EventMessage(objects=objects, operation=operation, raw=raw)


def _all_strings(values: list[Any]) -> bool:
    if len(values) == 1:  # the common case, without a generator
        return isinstance(values[0], str)
    return all(isinstance(value, str) for value in values)


def encode_result(
    message: EventMessage, model: str, predictions: Sequence[tuple[str, list[Any]]]
) -> bytes:
    """The published result: the original message, the model, and predictions per object."""
    return to_json(
        {
            "operation": message.operation,
            "data": message.raw,
            "model": model,
            "results": [{"object": key, "predictions": values} for key, values in predictions]
            if len(predictions) != 1  # else the common case, without a list comprehension
            else [{"object": predictions[0][0], "predictions": predictions[0][1]}],
        },
        fallback=_plain,
    )


def encode_dead_letter(error: str, attempts: int, data: Any) -> bytes:
    return to_json({"error": error, "attempts": attempts, "data": data}, fallback=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays a model returned, as JSON numbers and lists."""
    tolist = getattr(value, "tolist", None)
    if tolist is None:
        raise TypeError(f"a prediction of type {type(value).__name__} cannot be sent as JSON")
    return tolist()
