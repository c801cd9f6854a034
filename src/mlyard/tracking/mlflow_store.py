"""Opening MLflow's stores: which kind a URI names, and an ``MlflowClient`` on it.

``mlflow`` is imported on first use only (seconds), so commands that do not track stay fast.
An embedded SQLite store is opened write-ahead logged, as mlyard's own database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlyard.errors import TrackingError

ARTIFACTS_DIRECTORY = "mlflow-artifacts"


def is_http_uri(uri: str) -> bool:
    """Whether ``uri`` names an MLflow tracking server (rather than a database or directory)."""
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def embedded_artifact_root(uri: str) -> Path | None:
    """Where a SQLite store keeps artifacts: beside the database, never in the working
    directory (MLflow's default ``./mlruns`` would scatter artifacts wherever mlyard runs)."""
    database = sqlite_path(uri)
    return None if database is None else database.parent / ARTIFACTS_DIRECTORY


def mlflow_client(uri: str, registry_uri: str | None = None) -> Any:
    """An ``MlflowClient`` tracking at ``uri`` with its registry at ``registry_uri`` (default:
    ``uri``); imports mlflow on first use."""
    import logging
    import os

    # MLflow 3 sends usage telemetry to its vendor unless told not to; mlyard sends nothing
    # anywhere the user did not configure (setting the variable to false opts back in).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Against a server, MLflow writes "View run ... at" to *stdout* on every run end, which
    # would corrupt `--json` output; mlyard prints the run URL in its own summary.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise TrackingError(
            f"Tracking to {uri} needs MLflow, which is not installed here ({exc}).",
            hint="pip install 'mlflow>=3', or set tracking.uri to 'none' in mlyard.toml "
            "(MLYARD_TRACKING__URI=none) to run without tracking.",
        ) from exc

    # MLflow reports migrations and registrations at INFO on stderr; mlyard summarises.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    database = sqlite_path(uri)
    if database is not None:
        _write_ahead_logged(database)
    return MlflowClient(tracking_uri=uri, registry_uri=registry_uri or uri)


def _write_ahead_logged(database: Path) -> None:
    """Open MLflow's SQLite store in WAL mode with ``synchronous=NORMAL``, as mlyard's own
    database: MLflow commits about six times per step run, and in SQLite's default mode each
    commit waits for the disk twice (a third of the tracker's time per step). A commit stays
    safe when the process is killed; only a power cut can lose the last ones, and attempts
    are marked tracked (and replayed when not) in mlyard's own store."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    target = os.path.realpath(database)
    if target in _TUNED_DATABASES:
        return
    _TUNED_DATABASES.add(target)

    def configure(dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        names = [row[2] for row in dbapi_connection.execute("PRAGMA database_list")]
        if not any(name and os.path.realpath(name) == target for name in names):
            return  # another engine's database (mlyard's own sets its pragmas itself)
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    # MLflow creates its engine inside its store; a class-level listener reaches it without
    # touching MLflow's internals, and it filters on the database file.
    event.listen(Engine, "connect", configure)


#: SQLite stores whose connections get ``_write_ahead_logged``'s pragmas (one listener each).
_TUNED_DATABASES: set[str] = set()
