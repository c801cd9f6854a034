"""Dynamic batching: concurrent requests become one model call, and the results are split back.

One ``DynamicBatcher`` per model, living on the server's event loop. A request's arrays wait in a
queue; the batcher takes the first, then whatever else arrives within ``max_queue_delay_ms`` (up
to ``max_batch_size`` rows), concatenates them along axis 0 and runs the model in its one worker
thread, so the event loop keeps accepting while the model computes. While a batch runs the next
one fills up, so under load batches grow by themselves. If a batch fails, its requests are retried
one by one, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

NamedArrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class BatchingConfig:
    """Limits of one batch: rows per model call and how long a request may wait for company."""

    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0


class BatchObserver(Protocol):
    """Where the batcher reports what it does (the Prometheus metrics implement it)."""

    def observe_batch(self, rows: int, requests: int) -> None: ...

    def set_queue_depth(self, depth: int) -> None: ...


class ModelCallError(RuntimeError):
    """The model raised while predicting; carries the model's message."""


@dataclass
class _Pending:
    inputs: NamedArrays
    rows: int
    # Requests batch together only when names, dtypes and trailing dimensions agree.
    group: tuple[Any, ...]
    result: asyncio.Future[NamedArrays] = field(repr=False)


class DynamicBatcher:
    """Groups concurrent ``submit`` calls into batched calls of ``predict``."""

    def __init__(
        self,
        predict: Callable[[NamedArrays], NamedArrays],
        config: BatchingConfig,
        observer: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self._config = config
        self._observer = observer
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self._set_aside: deque[_Pending] = deque()

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stop after the current batch; callers still waiting get ``CancelledError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, inputs: NamedArrays) -> NamedArrays:
        """Queue one request (arrays sharing their first dimension) and await its outputs."""
        first = next(iter(inputs.values()))
        batchable = first.ndim > 0 and all(
            a.ndim > 0 and len(a) == len(first) for a in inputs.values()
        )
        rows = len(first) if batchable else 1
        group: tuple[Any, ...] = (
            tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items()))
            if batchable
            else (object(),)  # unique: never batched with anything
        )
        pending = _Pending(inputs, rows, group, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        self._report_depth()
        return await pending.result

    async def run_alone(self, inputs: NamedArrays) -> NamedArrays:
        """Run one input directly in the model thread, bypassing the queue (warm-up)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_model, inputs)

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            self._report_depth()
            await self._execute(batch)

    async def _collect(self) -> list[_Pending]:
        first = self._set_aside.popleft() if self._set_aside else await self._queue.get()
        batch, rows = [first], first.rows
        # Requests set aside earlier (other shapes) join first when they fit, keeping order.
        waiting, self._set_aside = self._set_aside, deque()
        for item in waiting:
            if item.group == first.group and rows + item.rows <= self._config.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                self._set_aside.append(item)
        deadline = asyncio.get_running_loop().time() + self._config.max_queue_delay_ms / 1000
        while rows < self._config.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item.group != first.group:
                self._set_aside.append(item)  # another shape: it starts a later batch
                continue
            if rows + item.rows > self._config.max_batch_size:
                self._set_aside.appendleft(item)
                break
            batch.append(item)
            rows += item.rows
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        live = [p for p in batch if not p.result.done()]  # skip callers that went away
        if not live:
            return
        if self._observer is not None:
            self._observer.observe_batch(sum(p.rows for p in live), len(live))
        merged = _concatenate([p.inputs for p in live])
        try:
            outputs = await loop.run_in_executor(self._executor, self._call_model, merged)
            parts = _split(outputs, [p.rows for p in live])
        except Exception as exc:
            if len(live) == 1:
                _fail(live[0], exc)
                return
            # One bad request must not fail the others: retry them one at a time.
            for pending in live:
                try:
                    single = await loop.run_in_executor(
                        self._executor, self._call_model, pending.inputs
                    )
                except Exception as single_exc:
                    _fail(pending, single_exc)
                else:
                    if not pending.result.done():
                        pending.result.set_result(single)
            return
        for pending, part in zip(live, parts, strict=True):
            if not pending.result.done():
                pending.result.set_result(part)

    def _call_model(self, inputs: NamedArrays) -> NamedArrays:
        return self._predict(inputs)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.set_queue_depth(self._queue.qsize() + len(self._set_aside))


def _concatenate(requests: list[NamedArrays]) -> NamedArrays:
    if len(requests) == 1:
        return requests[0]
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}


def _split(outputs: NamedArrays, rows: list[int]) -> list[NamedArrays]:
    if len(rows) == 1:
        return [outputs]
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or len(array) != total:
            raise ModelCallError(
                f"output {name!r} has {array.shape[0] if array.ndim else 0} rows for a batch of "
                f"{total}; the model does not keep rows aligned"
            )
    offsets = np.cumsum(rows)[:-1]
    per_output = {name: np.split(array, offsets) for name, array in outputs.items()}
    return [{name: parts[i] for name, parts in per_output.items()} for i in range(len(rows))]


def _fail(pending: _Pending, exc: Exception) -> None:
    if not pending.result.done():
        error = exc if isinstance(exc, ModelCallError) else ModelCallError(str(exc) or repr(exc))
        pending.result.set_exception(error)
