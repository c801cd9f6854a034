"""The two streaming endpoints: ``?watch=true`` (JSON lines) and ``pods/log`` (follow)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from tests.kubefake.errors import ApiError, bad_request
from tests.kubefake.resources import ResourceType
from tests.kubefake.store import Change, Obj, Store

Matcher = Callable[[Obj], bool]
BOOKMARK_INTERVAL = 10.0


def _line(event_type: str, obj: Obj) -> bytes:
    return (json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n").encode()


def _translate(change: Change, matches: Matcher) -> str | None:
    """What a filtered watch sees: an object that starts or stops matching is ADDED / DELETED."""
    now = change.type != "DELETED" and matches(change.obj)
    before = change.old is not None and matches(change.old)
    if change.type == "ADDED":
        return "ADDED" if now else None
    if change.type == "DELETED":
        return "DELETED" if matches(change.obj) else None
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else None


async def watch_lines(
    store: Store,
    rtype: ResourceType,
    matches: Matcher,
    resource_version: str | None,
    timeout: float,
    bookmarks: bool,
) -> AsyncIterator[bytes]:
    """A watch stream: the current objects as ADDED when no ``resourceVersion`` (or "0") is
    given, else every change after it; ERROR 410 Expired when that is older than the history."""
    deadline = time.monotonic() + timeout
    if resource_version in (None, "", "0"):
        start = store.resource_version
        for obj in store.list(rtype, predicate=matches):
            yield _line("ADDED", obj)
    else:
        try:
            start = int(resource_version)
        except ValueError:
            yield _line(
                "ERROR", bad_request(f"invalid resource version: {resource_version}").status()
            )
            return
        try:
            store.check_not_expired(rtype, start)
        except ApiError as exc:
            yield _line("ERROR", exc.status())
            return
    changes = store.changes(rtype, start)
    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(remaining, next_bookmark - time.monotonic()) if bookmarks else remaining
            try:
                change = await asyncio.wait_for(anext(changes), timeout=max(wait, 0.01))
            except TimeoutError:
                if bookmarks:
                    yield _bookmark(rtype, store.resource_version)
                    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
                continue
            event_type = _translate(change, matches)
            if event_type:
                yield _line(event_type, change.obj)
    finally:
        with contextlib.suppress(Exception):
            await changes.aclose()
    if bookmarks:
        yield _bookmark(rtype, store.resource_version)


def _bookmark(rtype: ResourceType, rv: int) -> bytes:
    return _line(
        "BOOKMARK",
        {
            "kind": rtype.kind,
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(rv)},
        },
    )


class LogSource(Protocol):
    """What the log endpoint needs from the kubelet."""

    def log_path(self, pod_uid: str, container: str, previous: bool) -> Path | None: ...

    def is_running(self, pod_uid: str, container: str) -> bool: ...


def _tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        parts = data.splitlines(keepends=True)
        data = b"".join(parts[-lines:]) if lines > 0 else b""
    if limit is not None:
        data = data[:limit]
    return data


def read_log(path: Path, tail_lines: int | None, limit_bytes: int | None) -> bytes:
    """The log as written so far, cut by ``tailLines`` and ``limitBytes``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return _tail(data, tail_lines, limit_bytes)


async def follow_log(
    source: LogSource,
    store_alive: Callable[[], bool],
    pod_uid: str,
    container: str,
    path: Path,
    tail_lines: int | None,
) -> AsyncIterator[bytes]:
    """The log, then what the container writes until it ends (or its pod goes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    yield _tail(data, tail_lines, None)
    offset = len(data)
    while True:
        running = source.is_running(pod_uid, container) and store_alive()
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            yield chunk
        elif not running:
            return
        else:
            await asyncio.sleep(0.1)


def parse_bool(value: Any) -> bool:
    """Query booleans as Go's ``strconv.ParseBool`` reads them (the client sends ``True``)."""
    return str(value).lower() in ("1", "t", "true")
