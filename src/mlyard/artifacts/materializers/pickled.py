"""cloudpickle: the last resort, for values no other materializer knows."""

from __future__ import annotations

from typing import Any


class CloudpickleMaterializer:
    name = "cloudpickle"

    def can_save(self, value: object) -> bool:
        return True

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import cloudpickle

        return cloudpickle.dumps(value), {}

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        import cloudpickle

        return cloudpickle.loads(data)
