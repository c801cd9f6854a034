"""JSON values and numpy arrays."""

from __future__ import annotations

import io
import json
from typing import Any

from mlyard.artifacts.materializers.base import type_module


def _is_json_value(value: object, depth: int = 0) -> bool:
    if depth > 100:
        return False
    # Exact types: subclasses (numpy scalars, enums) belong to their own materializers.
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if type(value) is list:
        return all(_is_json_value(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _is_json_value(v, depth + 1) for k, v in value.items())
    return False


class JsonMaterializer:
    name = "json"

    def can_save(self, value: object) -> bool:
        if isinstance(value, tuple):
            return _is_json_value(list(value))
        return _is_json_value(value)

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        is_tuple = isinstance(value, tuple)
        payload = list(value) if isinstance(value, tuple) else value
        data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return data, {"tuple": True} if is_tuple else {}

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        value = json.loads(data)
        return tuple(value) if metadata.get("tuple") else value


class NumpyMaterializer:
    name = "numpy"

    def can_save(self, value: object) -> bool:
        if not type_module(value).startswith("numpy"):
            return False
        import numpy as np

        if isinstance(value, np.ndarray):
            return bool(value.dtype != object)
        return isinstance(value, np.generic)

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import numpy as np

        array = np.asarray(value)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue(), {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "scalar": not isinstance(value, np.ndarray),
        }

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        import numpy as np

        array = np.load(io.BytesIO(data), allow_pickle=False)
        return array[()] if metadata.get("scalar") else array
