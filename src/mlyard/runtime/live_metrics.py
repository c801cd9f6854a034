"""Logging a step's metrics to an MLflow server while the step runs, over MLflow's REST API.

Used only when the run asks for it (``tracking.live``) and the server answers from where the
step runs. Metrics are still kept in the step's result; the result says how many were sent, so
the orchestrator replays only the rest. Any failure stops live logging quietly: the buffered
metrics then reach MLflow through the orchestrator. MLflow itself is not imported here (it
costs a second per step); credentials come from MLflow's standard variables on the compute side.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from mlyard.models.tasks import MetricRecord, TrackingTarget

logger = logging.getLogger(__name__)
FLUSH_SECONDS = 2.0
TIMEOUT_SECONDS = 3.0
BATCH_SIZE = 1000


class LiveMetrics:
    """Sends metrics to the step's own MLflow run in the background."""

    def __init__(self, target: TrackingTarget, step_name: str, attempt_id: str) -> None:
        self.target = target
        self.step_name = step_name
        self.attempt_id = attempt_id
        self.run_id: str | None = None
        self.sent = 0
        self._pending: list[MetricRecord] = []
        self._lock = threading.Lock()
        self._failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.target.uri is not None
        request = urllib.request.Request(
            f"{self.target.uri.rstrip('/')}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **_auth_headers()},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer

    def start(self) -> bool:
        """Create the step's nested run; False (and buffering only) when that fails."""
        if not (self.target.live and self.target.uri and self.target.run_id):
            return False
        tags = {
            "mlflow.parentRunId": self.target.run_id,
            "mlyard.step": self.step_name,
            "mlyard.attempt_id": self.attempt_id,
        }
        try:
            answer = self._request(
                "runs/create",
                {
                    "experiment_id": self.target.experiment_id,
                    "run_name": self.step_name,
                    "start_time": int(time.time() * 1000),
                    "tags": [{"key": k, "value": v} for k, v in tags.items()],
                },
            )
            self.run_id = str(answer["run"]["info"]["run_id"])
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("MLflow is not reachable from this step (%s); buffering metrics", exc)
            return False
        self._thread = threading.Thread(target=self._flush_loop, daemon=True, name="mlyard-live")
        self._thread.start()
        return True

    def add(self, record: MetricRecord) -> None:
        if self.run_id is not None and not self._failed:
            with self._lock:
                self._pending.append(record)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
        if not batch or self._failed:
            return
        try:
            self._request(
                "runs/log-batch",
                {
                    "run_id": self.run_id,
                    "metrics": [
                        {
                            "key": m.key,
                            "value": m.value,
                            "timestamp": m.timestamp_ms,
                            "step": m.step,
                        }
                        for m in batch
                    ],
                },
            )
            self.sent += len(batch)
        except (OSError, ValueError) as exc:
            logger.warning("live metric logging stopped (%s); the rest is replayed later", exc)
            self._failed = True

    def finish(self) -> None:
        """Send what is left; afterwards ``sent`` counts the metrics MLflow has."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_SECONDS * 2)
        while not self._failed:
            with self._lock:
                if not self._pending:
                    break
            self._flush()


def _auth_headers() -> dict[str, str]:
    # MLflow's own variables, read on the compute side: never written into task documents.
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        import base64

        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}
    return {}
