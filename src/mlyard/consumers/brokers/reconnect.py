"""Retrying a broker call while the broker is away, then giving up with a ``BackendError``.

Network brokers drop: a restart, a failover, a blip. Sources and sinks call the broker through
``call_with_reconnect`` so a short outage costs a pause (exponential backoff) instead of a
crashed worker, and an outage longer than ``window`` seconds ends in one clear error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from mlyard.errors import BackendError

T = TypeVar("T")
FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0
DEFAULT_WINDOW_SECONDS = 30.0


def call_with_reconnect(
    call: Callable[[], T],
    *,
    transient: tuple[type[BaseException], ...],
    what: str,
    url: str,
    window: float = DEFAULT_WINDOW_SECONDS,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``call``; on a ``transient`` error retry with backoff for up to ``window`` seconds.

    ``on_retry`` runs before each retry (e.g. to drop a broken connection). Blocks while
    retrying. Raises ``BackendError`` naming ``what`` and the (redacted) ``url`` when the broker
    stays away.
    """
    deadline = time.monotonic() + window
    delay = FIRST_DELAY_SECONDS
    while True:
        try:
            return call()
        except transient as exc:
            if time.monotonic() + delay > deadline:
                raise BackendError(
                    f"Could not {what} at {url}: the broker has been unreachable for "
                    f"{window:.0f} s ({type(exc).__name__}: {exc}).",
                    hint="Check that the broker is running and reachable, then restart the worker.",
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            if on_retry is not None:
                on_retry()
