"""Terminal output shared by every command: one Rich console, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _default(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def emit_json(data: object) -> None:
    """Write ``data`` as one JSON document on stdout (for ``--json``)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    sys.stdout.write(json.dumps(data, default=_default, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
