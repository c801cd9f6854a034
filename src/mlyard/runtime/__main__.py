"""``python -m mlyard.runtime TASK_URI [--endpoint-url URL]``: run one step attempt.

Under torchrun every rank runs the step; rank 0 alone stores its outputs and result.

Exit status: 0 when the step succeeded, 1 when it failed (its result says why), 2 when the task
could not be read at all (no result is written then; the backend reports the job's own status).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile

from mlyard.artifacts.store import ArtifactStore, read_uri
from mlyard.errors import MlyardError
from mlyard.models.tasks import TaskSpec
from mlyard.runtime.announce import announce_process, set_process_name
from mlyard.runtime.execute import run_task, run_worker_rank, worker_rank
from mlyard.runtime.stored_log import LOG_DOCUMENT, StoredLog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlyard.runtime")
    parser.add_argument("task_uri", help="URI of the task document (task.json).")
    parser.add_argument("--endpoint-url", default=None, help="S3 endpoint of the store.")
    parser.add_argument(
        "--store-log",
        action="store_true",
        help="Also keep the attempt's stdout and stderr in the store (tasks/<attempt>/log.txt).",
    )
    return parser


def prepare_for_fork() -> None:
    """Do once what every step process forked after this would do again: probe the temporary
    directory, resolve prctl (~1 ms per step on the local backend's fork server)."""
    tempfile.gettempdir()
    set_process_name()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return execute(args.task_uri, endpoint_url=args.endpoint_url, store_log=args.store_log)


def execute(task_uri: str, *, endpoint_url: str | None = None, store_log: bool = False) -> int:
    """Run the attempt whose task document is at ``task_uri``; returns the exit status.

    The local fork server calls this directly (no argument parsing in a forked step)."""
    announce_process()
    try:
        spec = TaskSpec.model_validate_json(read_uri(task_uri, endpoint_url=endpoint_url))
        store = ArtifactStore(spec.artifact_store, endpoint_url=endpoint_url)
        if worker_rank() != 0:
            return run_worker_rank(spec, store)
        log = StoredLog() if store_log else None
        try:
            result = run_task(spec, store)
        finally:
            stored = log.finish() if log is not None else b""
            if stored:  # an attempt that had ended already printed nothing: keep its log
                store.write_document(spec.attempt_id, LOG_DOCUMENT, stored)
    except MlyardError as error:
        print(f"mlyard runtime: {error}", file=sys.stderr)
        return 2
    return 0 if result.status == "succeeded" else 1


if __name__ == "__main__":
    status = main()
    gc.freeze()  # the result is written: skip the exit's collection over every module
    sys.exit(status)
