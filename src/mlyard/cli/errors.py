"""The one place where errors become exit codes and messages people read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer

from mlyard.cli.output import err_console, styled
from mlyard.errors import MlyardError

P = ParamSpec("P")
R = TypeVar("R")

#: Exit code when the user interrupted a command (as shells report SIGINT).
INTERRUPTED_EXIT_CODE = 130

_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled
    logging.basicConfig(level=logging.DEBUG if enabled else logging.WARNING)


def report_error(error: MlyardError) -> None:
    """Print ``error`` on stderr exactly as written: its message, then its hint if it has one."""
    err_console.print(styled(("Error:", "bold red"), " ", error.message), soft_wrap=True)
    if error.hint:
        err_console.print(error.hint, soft_wrap=True)


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn ``MlyardError`` into a message and an exit code; a traceback only with ``--debug``."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MlyardError as error:
            if _debug:
                err_console.print_exception()
            report_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err_console.print(styled(("Interrupted.", "yellow")))
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None

    return wrapper
