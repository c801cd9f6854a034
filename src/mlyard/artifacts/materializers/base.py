"""What a materializer is: turns one kind of value into bytes and back."""

from __future__ import annotations

from typing import Any, Protocol


class Materializer(Protocol):
    """Stores values of some types as one blob; bytes are deterministic for equal values, so
    identical outputs get the same digest and are stored once."""

    name: str

    def can_save(self, value: object) -> bool:
        """Whether this materializer handles ``value`` (check the type's module before
        importing heavy libraries)."""

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        """The bytes to store and details for people (shape, dtype, columns, …)."""

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        """The value back from its bytes."""


def type_module(value: object) -> str:
    return type(value).__module__ or ""


def qualified_type(value: object) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"
