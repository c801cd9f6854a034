"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending one POST at a time.

Hand-rolled on asyncio streams rather than httpx so the client costs little CPU next to the
server it measures (they share the machine). Every server under test gets the same load.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    measure_from: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                writer.write(request)
                status = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                status = 0  # counted as an error; reconnect and go on
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            if started >= measure_from:
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(status)
    finally:
        writer.close()


async def _run(
    host: str,
    port: int,
    path: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    warmup_seconds: float,
    headers: dict[str, str],
) -> LoadResult:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    content_type = "" if "Content-Type" in headers else "Content-Type: application/json\r\n"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{content_type}{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    measure_from = start + warmup_seconds
    deadline = measure_from + seconds
    await asyncio.gather(
        *(
            _connection(host, port, request, deadline, measure_from, latencies, errors)
            for _ in range(concurrency)
        )
    )
    return summarize(latencies, errors, seconds)


def summarize(latencies: list[float], errors: list[int], seconds: float) -> LoadResult:
    """The result of a run that answered ``latencies`` (seconds) and ``errors`` in ``seconds``."""
    measured = np.asarray(latencies) * 1000
    return LoadResult(
        requests=len(latencies),
        errors=len(errors),
        seconds=seconds,
        p50_ms=float(np.percentile(measured, 50)) if len(measured) else float("nan"),
        p99_ms=float(np.percentile(measured, 99)) if len(measured) else float("nan"),
    )


def run_load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    warmup_seconds: float = 2.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Send ``body`` to ``path`` over ``concurrency`` connections for ``seconds`` after warm-up."""
    return asyncio.run(
        _run(host, port, path, body, concurrency, seconds, warmup_seconds, headers or {})
    )
