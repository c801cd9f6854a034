"""Optional extras: which modules each one provides, and the one check that it is installed.

The base install runs pipelines locally with MLflow tracking. Everything else comes from an
optional extra of ``pyproject.toml`` (``pip install 'mlyard[serve]'``). A package of mlyard that
needs one calls ``require_extra`` at its boundary, before it imports the library, so a missing
extra is a one-line ``MissingExtraError`` naming what to install, never a
``ModuleNotFoundError`` traceback from deep inside a command.
"""

from __future__ import annotations

import importlib.util
import sys

from mlyard.errors import MissingExtraError

#: extra -> the top-level modules mlyard imports from it (starlette comes with fastapi). A test
#: checks that pyproject.toml's extra installs each of them. ``consume`` includes the server's
#: libraries because the consumer workers share the model server's loading and device leasing.
_SERVER_MODULES = ("fastapi", "uvicorn", "prometheus_client", "grpc", "google.protobuf")
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serve": _SERVER_MODULES,
    "consume": (*_SERVER_MODULES, "PIL", "s3fs"),
    "s3": ("s3fs",),
    "postgres": ("psycopg",),
    "gpu": ("pynvml",),
    "torch": ("torch",),
    "slurm": ("asyncssh",),
    "k8s": ("kubernetes", "yaml"),
    "ray": ("ray",),
    "kafka": ("confluent_kafka",),
    "redis": ("redis",),
    "nats": ("nats",),
    "video": ("cv2",),
}


def missing_module(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be imported here, or ``None`` when all can."""
    for module in EXTRA_MODULES[extra]:
        if module in sys.modules:
            if sys.modules[module] is None:  # an import that was blocked on purpose
                return module
            continue
        try:
            found = importlib.util.find_spec(module)  # finds, does not import: ~0.1 ms
        except ModuleNotFoundError:  # the parent of a dotted name is missing
            found = None
        if found is None:
            return module
    return None


def require_extra(*extras: str, needed_by: str) -> None:
    """Raise ``MissingExtraError`` unless every module of each optional extra is installed.

    ``needed_by`` names the feature for the message, which is one line naming every extra that
    is missing and the command that installs them, e.g. "mlyard serve needs the optional extra
    'serve' (prometheus_client is not installed): pip install 'mlyard[serve]'".
    """
    missing = {extra: module for extra in extras if (module := missing_module(extra)) is not None}
    if not missing:
        return
    quoted = [repr(extra) for extra in missing]
    names = " and ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
    modules = list(dict.fromkeys(missing.values()))
    verb = "is" if len(modules) == 1 else "are"
    plural = "s" if len(missing) > 1 else ""
    absent = f"{', '.join(modules)} {verb} not installed"
    raise MissingExtraError(
        f"{needed_by} needs the optional extra{plural} {names} ({absent}): "
        f"pip install 'mlyard[{','.join(missing)}]'"
    )
