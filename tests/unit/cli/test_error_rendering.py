"""Every error message is printed exactly as written, brackets included.

The messages are found in the source, not listed by hand: every call of an ``MlyardError`` class
in ``src/mlyard`` whose message or hint holds a ``[`` is rebuilt from its literal text (each
``{…}`` of an f-string filled with a value that has brackets too) and printed through
``report_error``, the one place the CLI prints errors. A new message cannot be forgotten.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlyard.cli.errors import report_error
from mlyard.cli.output import console, err_console
from mlyard.errors import MlyardError

SOURCE = Path(__file__).resolve().parents[3] / "src" / "mlyard"
#: What each ``{…}`` of an f-string message becomes: user text that looks like markup.
FILLED = "[bold]v[/]"


@dataclass(frozen=True)
class Message:
    where: str
    message: str
    hint: str | None


def _error_classes(trees: list[ast.Module]) -> set[str]:
    """Names of MlyardError and every class deriving from it anywhere in the source."""
    names = {"MlyardError"}
    grew = True
    while grew:
        grew = False
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in names:
                    bases = {_name(base) for base in node.bases}
                    if bases & names:
                        names.add(node.name)
                        grew = True
    return names


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literal_text(node: ast.expr | None) -> str | None:
    """The text of a string expression with every interpolation filled; None if not literal."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [_literal_text(value) for value in node.values]
        return "".join(part if part is not None else FILLED for part in parts)
    if isinstance(node, ast.FormattedValue):
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_text(node.left), _literal_text(node.right)
        if left is None and right is None:
            return None
        return (left or FILLED) + (right or FILLED)
    return None


def error_messages() -> list[Message]:
    """Every MlyardError built in the source, its message and hint as literal text."""
    files = sorted(SOURCE.rglob("*.py"))
    trees = [ast.parse(path.read_text(), filename=str(path)) for path in files]
    classes = _error_classes(trees)
    found = []
    for path, tree in zip(files, trees, strict=True):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in classes:
                message = _literal_text(node.args[0] if node.args else None)
                hints = [keyword.value for keyword in node.keywords if keyword.arg == "hint"]
                hint = _literal_text(hints[0] if hints else None)
                where = f"{path.relative_to(SOURCE)}:{node.lineno}"
                found.append(Message(where, message or "", hint))
    return found


ALL_MESSAGES = error_messages()
MESSAGES = [m for m in ALL_MESSAGES if "[" in m.message + (m.hint or "")]


def _printed(error: MlyardError) -> str:
    with err_console.capture() as captured:
        report_error(error)
    return captured.get()


def test_every_error_message_is_written_where_the_scan_can_read_it() -> None:
    # A message passed in a variable would escape this test: write it in the raise.
    assert len(ALL_MESSAGES) > 100
    assert [m.where for m in ALL_MESSAGES if not m.message] == []


def test_the_scan_finds_the_messages_the_issue_names() -> None:
    texts = [f"{m.message}\n{m.hint}" for m in MESSAGES]
    for expected in ("Add a [backends.", "Fix [backends.", "pip install 'mlyard["):
        assert any(expected in text for text in texts), expected


@pytest.mark.parametrize("case", MESSAGES, ids=[m.where for m in MESSAGES])
def test_message_is_printed_whole(case: Message) -> None:
    printed = _printed(MlyardError(case.message, hint=case.hint))
    assert printed == f"Error: {case.message}\n" + (f"{case.hint}\n" if case.hint else "")


def test_markup_and_emoji_in_any_printed_text_come_out_as_written() -> None:
    # Step errors, parameters, paths, log lines and model names reach the same two consoles.
    text = "step [red]failed[/red] at :thumbs_up: in [backends.hpc] of s3://b/[x]"
    for shown in (console, err_console):
        with shown.capture() as captured:
            shown.print(text, soft_wrap=True)
        assert captured.get() == text + "\n"


def test_table_cells_and_titles_keep_their_brackets() -> None:
    from mlyard.cli.models import models_table
    from mlyard.models.registry import ModelSummary

    model = ModelSummary(name="digits[v2]", latest_version="1", description="[bold]raw[/]")
    with console.capture() as captured:
        console.print(models_table([model]), width=200)
    assert "digits[v2]" in captured.get()
    assert "[bold]raw[/]" in captured.get()
