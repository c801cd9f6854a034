"""The messages consumers read and the results they publish (the wire format, JSON).

An incoming message names the objects to process::

    {"id": "cam-7/2026-11-24T10:00:00", "objects": ["s3://recordings/cam-7/0001.mp4"],
     "operation": "detect", "data": {...anything the producer adds...}}

``objects`` are artifact-store keys (``sha256:…`` digests or plain keys under the store) or
``s3://`` URIs. The published result is the original message plus the model's output::

    {"operation": "detect", "data": <the original message>, "model": "models:/yolo/3",
     "results": [{"object": "s3://…/0001.mp4", "predictions": [...]}, ...]}

A dead letter is ``{"error": "...", "attempts": n, "data": <original message or its text>}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class EventMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, description="The producer's id for the message.")
    objects: list[str] = Field(min_length=1, description="Object keys or s3:// URIs.")
    operation: str = Field(default="predict", description="Echoed into the result.")


class ObjectResult(BaseModel):
    object: str
    predictions: list[Any]


class EventResult(BaseModel):
    operation: str
    data: dict[str, Any]
    model: str
    results: list[ObjectResult]


class DeadLetter(BaseModel):
    error: str
    attempts: int
    data: Any


class MalformedMessageError(ValueError):
    """The message is not JSON or lacks ``objects``: dead-lettered at once, never retried."""


def parse_message(payload: bytes) -> tuple[EventMessage, dict[str, Any]]:
    """The validated message and its original JSON object."""
    import json

    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessageError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedMessageError("a message must be a JSON object with 'objects'")
    try:
        return EventMessage.model_validate(raw), raw
    except ValidationError as exc:
        raise MalformedMessageError(f"invalid message: {exc.errors()[0]['msg']}") from exc
