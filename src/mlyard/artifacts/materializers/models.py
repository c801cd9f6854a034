"""Model objects: torch tensors and modules, scikit-learn (and other joblib-friendly) models."""

from __future__ import annotations

import io
from typing import Any

from mlyard.artifacts.materializers.base import qualified_type, type_module
from mlyard.extras import require_extra


class TorchMaterializer:
    name = "torch"

    def can_save(self, value: object) -> bool:
        if not type_module(value).startswith("torch") and not _is_torch_module(value):
            return False
        import torch

        return isinstance(value, torch.Tensor | torch.nn.Module)

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import torch

        buffer = io.BytesIO()
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            torch.save(tensor, buffer)
            return buffer.getvalue(), {
                "kind": "tensor",
                "shape": list(tensor.shape),
                "dtype": str(tensor.dtype),
            }
        assert isinstance(value, torch.nn.Module)
        torch.save(value.cpu(), buffer)
        return buffer.getvalue(), {"kind": "module", "class": qualified_type(value)}

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        # Saving had torch in hand; loading may happen where it is not installed.
        require_extra("torch", needed_by="Loading a torch artifact")
        import torch

        # Whole modules are pickles of the user's classes: loaded only from this run's own
        # store, written by its own steps.
        weights_only = metadata.get("kind") == "tensor"
        return torch.load(io.BytesIO(data), weights_only=weights_only, map_location="cpu")


def _is_torch_module(value: object) -> bool:
    # A user's nn.Module subclass lives in the user's module, not in torch.
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


class JoblibMaterializer:
    name = "joblib"

    def can_save(self, value: object) -> bool:
        module = type_module(value)
        if module.startswith(("sklearn", "xgboost", "lightgbm")):
            return True
        import sys

        base = sys.modules.get("sklearn.base")
        return base is not None and isinstance(value, base.BaseEstimator)

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import joblib

        buffer = io.BytesIO()
        joblib.dump(value, buffer)
        return buffer.getvalue(), {"class": qualified_type(value)}

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        import joblib

        return joblib.load(io.BytesIO(data))
