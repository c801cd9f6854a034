"""The attempt's own log, kept in the artifact store (``tasks/<attempt_id>/log.txt``) for
backends whose logs go away with the job (a Kubernetes pod removed after its TTL): everything
the process writes to stdout and stderr still reaches them, and a copy is stored at the end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

LOG_DOCUMENT = "log.txt"
#: The stored copy keeps the end of a log longer than this.
MAX_STORED_BYTES = 8 * 1024**2


class StoredLog:
    """Tees file descriptors 1 and 2 through a pipe into the original stdout and a spool file;
    ``finish`` restores them and returns what was written (its last ``MAX_STORED_BYTES``)."""

    def __init__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self._output = os.dup(1)
        self._saved_stderr = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
        self._thread.start()

    def _pump(self, read_end: int) -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(read_end, 65536):
                os.write(self._output, chunk)
                self._spool.write(chunk)
        os.close(read_end)

    def finish(self) -> bytes:
        """Stop teeing; the bytes written meanwhile, by this process and its children."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._output, 1)  # closes the pipe's last write end here: the pump sees EOF
        os.dup2(self._saved_stderr, 2)
        os.close(self._saved_stderr)
        self._thread.join(timeout=5.0)
        size = self._spool.seek(0, os.SEEK_END)
        self._spool.seek(max(0, size - MAX_STORED_BYTES))
        data = self._spool.read()
        self._spool.close()
        os.close(self._output)
        return data
