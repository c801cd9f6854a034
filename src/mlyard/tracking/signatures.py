"""The MLflow signature of a model logged without an input example, from what the model knows.

With an input example MLflow infers the signature itself, by running the model on it. Without
one, only a fitted scikit-learn estimator (or pipeline) says enough about its input:

- fitted on a DataFrame, it knows its columns (``feature_names_in_``): the input is those
  columns, named, as doubles (scikit-learn converts to float64);
- fitted on an array, it knows how many features (``n_features_in_``): the input is one unnamed
  ``float64`` tensor of shape ``[-1, n]``.

A classifier's output is its labels: an unnamed tensor of its ``classes_`` dtype (when numeric
or boolean), shape ``[-1]``. Other outputs (a regressor's, string labels) are left out of the
signature rather than guessed. Other flavours get no signature without an example: a PyTorch
module does not record the shape it takes.
"""

from __future__ import annotations

from typing import Any

#: numpy dtype kinds MLflow tensor specs describe exactly: bool, signed, unsigned, float.
_NUMERIC_KINDS = frozenset("biuf")


def signature_from_model(flavor: str, model_object: object) -> Any | None:
    """An ``mlflow.models.ModelSignature`` for ``model_object`` from its own attributes, or
    ``None`` when the flavour or the object does not say what it takes."""
    if flavor != "sklearn":
        return None
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    names = getattr(model_object, "feature_names_in_", None)
    count = getattr(model_object, "n_features_in_", None)
    if names is not None and len(names) > 0:
        inputs = Schema([ColSpec(DataType.double, str(name)) for name in names])
    elif isinstance(count, int) and count > 0:
        import numpy as np

        inputs = Schema([TensorSpec(np.dtype(np.float64), (-1, count))])
    else:
        return None
    return ModelSignature(inputs=inputs, outputs=_classifier_outputs(model_object))


def _classifier_outputs(model_object: object) -> Any | None:
    """The labels a fitted classifier predicts, as a tensor schema; ``None`` otherwise."""
    from sklearn.base import is_classifier

    classes = getattr(model_object, "classes_", None)
    dtype = getattr(classes, "dtype", None)
    if not is_classifier(model_object) or dtype is None or dtype.kind not in _NUMERIC_KINDS:
        return None
    from mlflow.types import Schema, TensorSpec

    return Schema([TensorSpec(dtype, (-1,))])
