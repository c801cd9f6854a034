"""Storing step outputs by type: ``save_value`` picks the first materializer that fits.

Order: JSON values, numpy, pandas, pyarrow, torch, scikit-learn/joblib, files and directories,
then cloudpickle as the last resort (the run view flags values stored that way).
"""

from __future__ import annotations

from mlyard.artifacts.materializers.base import Materializer, qualified_type
from mlyard.artifacts.materializers.builtin import JsonMaterializer, NumpyMaterializer
from mlyard.artifacts.materializers.models import JoblibMaterializer, TorchMaterializer
from mlyard.artifacts.materializers.paths import PathMaterializer
from mlyard.artifacts.materializers.pickled import CloudpickleMaterializer
from mlyard.artifacts.materializers.tabular import ArrowMaterializer, PandasMaterializer
from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import ArtifactError
from mlyard.models.tasks import ArtifactRef

MATERIALIZERS: tuple[Materializer, ...] = (
    JsonMaterializer(),
    NumpyMaterializer(),
    PandasMaterializer(),
    ArrowMaterializer(),
    TorchMaterializer(),
    JoblibMaterializer(),
    PathMaterializer(),
    CloudpickleMaterializer(),
)
_BY_NAME = {m.name: m for m in MATERIALIZERS}


def save_value(store: ArtifactStore, value: object) -> ArtifactRef:
    """Store ``value`` with the first materializer that handles it; returns its reference."""
    for materializer in MATERIALIZERS:
        if not materializer.can_save(value):
            continue
        try:
            data, metadata = materializer.save(value)
        except Exception as exc:
            if materializer.name != "cloudpickle":
                continue  # e.g. an object dtype numpy cannot save: try the next one
            raise ArtifactError(
                f"No materializer could store a value of type {qualified_type(value)} "
                f"(cloudpickle failed too: {exc}).",
                hint="Return something storable instead: a numpy array, a list or dict of "
                "plain values, a DataFrame, a model object, or write a file and return its "
                "pathlib.Path.",
            ) from exc
        digest = store.put_bytes(data)
        return ArtifactRef(
            digest=digest,
            materializer=materializer.name,
            type_name=qualified_type(value),
            size_bytes=len(data),
            metadata=metadata,
        )
    raise AssertionError("cloudpickle accepts everything")  # pragma: no cover


def load_value(store: ArtifactStore, ref: ArtifactRef) -> object:
    """The value ``ref`` points at."""
    materializer = _BY_NAME.get(ref.materializer)
    if materializer is None:
        raise ArtifactError(
            f"Artifact {ref.digest} was stored by the materializer {ref.materializer!r}, "
            "which this version of mlyard does not have.",
            hint="Use the mlyard version that wrote it, or run the producing step again.",
        )
    return materializer.load(store.get_bytes(ref.digest), dict(ref.metadata))


__all__ = ["MATERIALIZERS", "Materializer", "load_value", "save_value"]
