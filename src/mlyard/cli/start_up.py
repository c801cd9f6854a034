"""The garbage collector while a command starts: its imports create ~400k objects (modules,
classes, functions) that live until the process ends, and the collector would scan them again
and again, ~15 % of the start-up of ``mlyard run``."""

from __future__ import annotations

import gc

#: Until a command's work begins the collector hardly runs (it still does, so nothing grows
#: without bound if a command never settles).
START_UP_THRESHOLDS = (100_000, 50, 50)
_DEFAULT_THRESHOLDS = gc.get_threshold()


def begin_start_up() -> None:
    gc.set_threshold(*START_UP_THRESHOLDS)


def settle_after_start_up() -> None:
    """Where a long-running command begins its work: what start-up created is frozen (never
    scanned again) and the collector runs as usual from here on."""
    gc.freeze()
    gc.set_threshold(*_DEFAULT_THRESHOLDS)
