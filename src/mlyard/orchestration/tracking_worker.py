"""The run's tracking thread: MLflow's start-up and every tracker call, off the steps' path.

MLflow costs seconds to import and open (more on a new store: its migrations) and tens of
milliseconds per step run. The orchestrator hands finished steps to this thread and goes on
scheduling; the thread prepares the tracker while the first steps run and then sends whatever
has finished since its last batch in one go. Only the run's end waits for it, and only so long:
what MLflow has not taken by then stays untracked in mlyard's store and is sent by
``mlyard runs resume``.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from mlyard.models.runs import RunState
from mlyard.orchestration.step_tracking import FinishedStep, StepTracking
from mlyard.store.repository import RunRow

logger = logging.getLogger(__name__)

#: While MLflow is imported, the collector hardly runs: the import creates ~300k objects that
#: live until the process ends (the same reasoning as the CLI's start-up, cli/lifecycle.py).
IMPORT_GC_THRESHOLDS = (100_000, 50, 50)
#: Steps sent per batch at most, so that their marks reach mlyard's store every so often
#: even when hundreds finish while MLflow is busy.
MAX_STEPS_PER_BATCH = 100


class TrackingWorker:
    """Runs ``StepTracking`` on one daemon thread: at most one tracker call at a time, in the
    order prepare, step batches, the parent run's end."""

    def __init__(self, tracking: StepTracking, run: RunRow) -> None:
        self._tracking = tracking
        self._run = run
        self._changed = threading.Condition()
        self._prepare_wanted = False
        self._prepared = False
        self._steps: list[FinishedStep] = []
        self._final_state: RunState | None = None
        self._cached: dict[str, str] = {}
        self._busy = False
        #: Steps in the batch being sent now.
        self._sending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="mlyard-tracking", daemon=True)
        self._thread.start()

    # --- the orchestrator's side: none of these waits for the tracker ----------------------

    def prepare(self) -> None:
        """Start MLflow's import and store set-up now (the run's first step was submitted)."""
        with self._changed:
            if not self._prepare_wanted:
                self._prepare_wanted = True
                self._changed.notify()

    def record(self, step: FinishedStep) -> None:
        """Queue a finished step; it goes out with the next batch."""
        with self._changed:
            self._steps.append(step)
            self._changed.notify()

    def finish_run(self, state: RunState, cached: dict[str, str] | None = None) -> None:
        """Queue the parent run's end, after every step queued so far; ``cached`` maps the
        cached steps to the step runs they reused (their metrics go on the parent run)."""
        with self._changed:
            self._final_state = state
            self._cached = cached or {}
            self._changed.notify()

    def wait_idle(self, timeout_seconds: float) -> bool:
        """Wait until everything queued was sent (or failed); ``False`` when it still had
        work after ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while self._has_work() or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    @property
    def unsent_steps(self) -> int:
        """Steps queued or being sent: what a run ending now would leave untracked."""
        with self._changed:
            return len(self._steps) + self._sending

    def close(self) -> None:
        """Let the thread end once idle. Never waits: a thread stuck on an unreachable MLflow
        must not keep the process alive (it is a daemon, and its work is replayed later)."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    # --- the thread ------------------------------------------------------------------------

    def _has_work(self) -> bool:
        prepare = self._prepare_wanted and not self._prepared
        return prepare or bool(self._steps) or self._final_state is not None

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._has_work() and not self._closed:
                    self._changed.wait()
                if not self._has_work():
                    return
                job = self._take_job()
                self._busy = True
            try:
                job()
            except Exception:  # a tracking failure must never stop the run
                logger.exception("tracking failed")
            finally:
                with self._changed:
                    self._busy = False
                    self._sending = 0
                    self._changed.notify_all()

    def _take_job(self) -> Callable[[], None]:
        """The next call to make (called with the lock held)."""
        tracking, run = self._tracking, self._run
        if self._prepare_wanted and not self._prepared:
            self._prepared = True
            return lambda: _prepare_without_collecting(tracking)
        if self._steps:
            batch = self._steps[:MAX_STEPS_PER_BATCH]
            del self._steps[:MAX_STEPS_PER_BATCH]
            self._sending = len(batch)
            return lambda: tracking.record_steps(run, batch)
        state = self._final_state
        assert state is not None
        self._final_state = None
        cached = self._cached
        return lambda: tracking.finish_run(run, state, cached)


def _prepare_without_collecting(tracking: StepTracking) -> None:
    """``tracking.prepare`` with the collector held back, then what it imported frozen (never
    scanned again), so the garbage collector does not rescan MLflow's modules all run long."""
    thresholds = gc.get_threshold()
    gc.set_threshold(*IMPORT_GC_THRESHOLDS)
    try:
        tracking.prepare()
    finally:
        gc.freeze()
        gc.set_threshold(*thresholds)
