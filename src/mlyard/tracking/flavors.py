"""Saving a model object in the MLflow Model format of its flavour, on the local disk.

``save_model`` of each MLflow flavour is pure local I/O (no tracking URI, no active run), so
the tracker saves here and uploads with its own client. Requirements are pinned from the
installed versions: without them MLflow infers them by re-loading the model in a subprocess,
which costs seconds per model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlyard.errors import TrackingError
from mlyard.tracking.signatures import signature_from_model

SUPPORTED_FLAVORS = ("sklearn", "pytorch", "xgboost", "lightgbm", "pyfunc")
PYFUNC_FLAVOR = "python_function"
#: Packages whose types an sklearn model may hold and still be saved with skops.
_LIBRARY_MODULES = frozenset({"sklearn", "numpy", "scipy", "builtins"})


@dataclass(frozen=True)
class SavedModel:
    """A model saved in the MLflow Model format."""

    path: Path
    flavor: str  # the native MLflow flavour from MLmodel ("sklearn", "pytorch", "python_function")


def save_model_locally(
    flavor: str,
    model_object: object,
    path: Path,
    *,
    artifact_path: str,
    run_id: str,
    model_id: str,
    input_example: object = None,
) -> SavedModel:
    """Save ``model_object`` at ``path`` (which must not exist) with the MLflow ``flavor``.

    ``artifact_path``, ``run_id`` and ``model_id`` are written to its MLmodel file, as
    ``mlflow.<flavor>.log_model`` would. With ``input_example`` MLflow stores it in the model
    and infers the signature by running the model on it; without, the signature is what the
    model itself says (``signatures.signature_from_model``), if anything. Raises
    ``TrackingError`` for an unknown or uninstalled flavour, or an object the flavour cannot
    save.
    """
    from mlflow.models import Model

    mlflow_model = Model(
        artifact_path=artifact_path, run_id=run_id, model_uuid=model_id, model_id=model_id
    )
    # With an example MLflow infers the signature (signature=None asks it to).
    signature = None if input_example is not None else signature_from_model(flavor, model_object)
    signature_arguments = {"input_example": input_example, "signature": signature}
    if flavor == "sklearn":
        _save_sklearn(model_object, path, mlflow_model, signature_arguments)
    elif flavor == "pytorch":
        import mlflow.pytorch

        # MLflow 3's default "pt2" format traces forward() and needs an input example, which
        # log_model does not take; whole-module pickling works for any nn.Module. Loading it
        # is the serving side's explicit opt-in, so MLflow's warning about it is muted here.
        with _quiet("mlflow.pytorch"):
            mlflow.pytorch.save_model(
                model_object,
                str(path),
                mlflow_model=mlflow_model,
                serialization_format="pickle",
                code_paths=user_code_paths(model_object) or None,
                pip_requirements=_pinned("torch", "cloudpickle"),
                **signature_arguments,
            )
    elif flavor in ("xgboost", "lightgbm"):
        _save_boosted(flavor, model_object, path, mlflow_model, signature_arguments)
    elif flavor == "pyfunc":
        import mlflow.pyfunc

        if not isinstance(model_object, mlflow.pyfunc.PythonModel):
            raise TrackingError(
                f"A model logged with flavor='pyfunc' must be an mlflow.pyfunc.PythonModel, "
                f"not {type(model_object).__name__}.",
                hint="Wrap it in a PythonModel subclass whose predict() calls it, or pass the "
                "flavour that matches its library.",
            )
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=model_object,
            mlflow_model=mlflow_model,
            code_paths=user_code_paths(model_object) or None,
            pip_requirements=_pinned("cloudpickle"),
            **signature_arguments,
        )
    else:
        raise TrackingError(
            f"mlyard cannot log a model with the MLflow flavour {flavor!r} "
            f"({type(model_object).__name__}).",
            hint="Pass flavor= one of " + ", ".join(SUPPORTED_FLAVORS) + " to log_model "
            "('pyfunc' takes an mlflow.pyfunc.PythonModel).",
        )
    return SavedModel(path=path, flavor=native_flavor(path))


def user_code_paths(model_object: object) -> list[str]:
    """The user's own modules (or top-level packages) that define the classes of a pickled
    model, so that the saved model loads where the pipeline's code is not importable (model
    serving). Installed distributions and the standard library are left to the requirements."""
    import sys
    from importlib.metadata import packages_distributions

    classes = {type(model_object)}
    modules = getattr(model_object, "modules", None)  # torch.nn.Module: every submodule
    if callable(modules):
        classes.update(type(child) for child in modules())
    installed = set(packages_distributions()) | set(sys.stdlib_module_names) | {"builtins"}
    paths: set[str] = set()
    for top_level in {cls.__module__.split(".", 1)[0] for cls in classes} - installed:
        module = sys.modules.get(top_level)
        file = getattr(module, "__file__", None)
        if top_level == "__main__" or not file:
            continue
        location = Path(file)
        paths.add(str(location.parent if location.name == "__init__.py" else location))
    return sorted(paths)


def native_flavor(model_directory: Path) -> str:
    """The model's own flavour from its MLmodel file; ``python_function`` when it has none."""
    from mlflow.models import Model

    flavors = Model.load(str(model_directory / "MLmodel")).flavors
    native = [name for name in flavors if name != PYFUNC_FLAVOR]
    return native[0] if native else PYFUNC_FLAVOR


def _save_sklearn(
    model_object: object, path: Path, mlflow_model: object, signature_arguments: dict[str, Any]
) -> None:
    """skops (MLflow 3's safe default) when the model is made of library types only, trusting
    those it flags (trees, for one); cloudpickle for models holding the user's own classes,
    which skops cannot load safely either."""
    import mlflow.sklearn

    library_types = _skops_library_types(model_object)
    if library_types is not None:
        mlflow.sklearn.save_model(
            model_object,
            str(path),
            mlflow_model=mlflow_model,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=library_types or None,
            pip_requirements=_pinned("scikit-learn", "skops"),
            **signature_arguments,
        )
    else:
        mlflow.sklearn.save_model(
            model_object,
            str(path),
            mlflow_model=mlflow_model,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=_pinned("scikit-learn", "cloudpickle"),
            **signature_arguments,
        )


def _skops_library_types(model_object: object) -> list[str] | None:
    """The types skops does not trust by default, when all come from scikit-learn, NumPy or
    SciPy (the step that just built the model vouches for them); ``None`` when the model
    holds other types or skops cannot represent it."""
    try:
        import skops.io  # type: ignore[import-untyped]

        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model_object))
    except Exception:  # skops raises assorted errors on objects it cannot represent
        return None
    if all(name.split(".", 1)[0] in _LIBRARY_MODULES for name in untrusted):
        return sorted(untrusted)
    return None


def _save_boosted(
    flavor: str,
    model_object: object,
    path: Path,
    mlflow_model: object,
    signature_arguments: dict[str, Any],
) -> None:
    import importlib

    try:
        importlib.import_module(flavor)
        module = importlib.import_module(f"mlflow.{flavor}")
    except ImportError as exc:
        raise TrackingError(
            f"Logging a {flavor} model needs the {flavor} package, which is not installed.",
            hint=f"pip install {flavor} in the environment that runs the pipeline.",
        ) from exc
    module.save_model(
        model_object,
        str(path),
        mlflow_model=mlflow_model,
        pip_requirements=_pinned(flavor),
        **signature_arguments,
    )


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from ``logger_name`` while the block runs."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _pinned(*distributions: str) -> list[str]:
    pins = []
    for distribution in distributions:
        try:
            pins.append(f"{distribution}=={version(distribution)}")
        except PackageNotFoundError:
            continue
    return pins
