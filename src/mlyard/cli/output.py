"""Terminal output shared by every command: one Rich console, JSON for scripts.

Both consoles print text exactly as given: Rich markup (``[bold]…[/]``) and emoji codes
(``:name:``) are off, because most of what the CLI prints was not written by it (error messages
with ``[backends.NAME]`` or ``pip install 'mlyard[s3]'``, step errors, parameters, paths, model
names, log lines) and Rich would silently swallow anything that looks like a tag. Style goes in
``rich.text.Text`` objects (see ``styled``), which never parse their content.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

console = Console(highlight=False, markup=False, emoji=False)
err_console = Console(stderr=True, highlight=False, markup=False, emoji=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from plain strings and ``(text, style)`` pairs; no part is read as markup."""
    return Text.assemble(*parts)


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
