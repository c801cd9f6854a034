"""Fingerprints of a step's code for the cache key.

A fingerprint covers the step function's source and, transitively, every function, class or
module of the user's project it refers to (by global name), plus simple module-level constants.
Code outside the project (libraries) is left out: it is covered by the declared environment.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


def code_fingerprint(function: Callable[..., Any], project_root: Path) -> str:
    """A hex digest that changes when the function or a project helper it uses changes."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    _feed(function, project_root.resolve(), digest, seen)
    return digest.hexdigest()


def _in_project(obj: object, project_root: Path) -> bool:
    module = (
        obj
        if isinstance(obj, types.ModuleType)
        else sys.modules.get(getattr(obj, "__module__", "") or "")
    )
    filename = getattr(module, "__file__", None)
    if not filename:
        return False
    try:
        Path(filename).resolve().relative_to(project_root)
    except ValueError:
        return False
    return "site-packages" not in filename


def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return repr(code.co_code) if code is not None else repr(obj)


def _feed(obj: object, project_root: Path, digest: Any, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    # A decorated step: fingerprint the function underneath.
    inner = getattr(obj, "definition", None)
    if inner is not None and callable(getattr(inner, "function", None)):
        obj = inner.function
    if isinstance(obj, types.ModuleType):
        digest.update(_source(obj).encode())
        return
    digest.update(_source(obj).encode())
    if isinstance(obj, type):
        members = [m for m in vars(obj).values() if isinstance(m, types.FunctionType)]
        for member in members:
            _feed_references(member, project_root, digest, seen)
        return
    if isinstance(obj, types.FunctionType):
        _feed_references(obj, project_root, digest, seen)


def _feed_references(
    function: types.FunctionType, project_root: Path, digest: Any, seen: set[int]
) -> None:
    for name in sorted(_global_names(function.__code__)):
        if name not in function.__globals__:
            continue
        value = function.__globals__[name]
        if isinstance(value, bool | int | float | str | bytes | tuple | frozenset) and (
            _in_project(sys.modules.get(function.__module__), project_root)
        ):
            digest.update(f"{name}={value!r}".encode())
        elif _in_project(value, project_root):
            _feed(value, project_root, digest, seen)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
