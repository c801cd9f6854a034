"""The dynamic batcher merges concurrent requests into one model call and splits results back."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from mlyard.serving.batching import BatchingConfig, DynamicBatcher, ModelCallError

Arrays = dict[str, np.ndarray[Any, Any]]


class DoublingModel:
    """A real (tiny) model: doubles its input, remembers batch sizes and its thread."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, inputs: Arrays) -> Arrays:
        self.threads.add(threading.current_thread().name)
        x = inputs["x"]
        if (x < 0).any():
            raise ValueError("negative inputs are not allowed")
        self.batch_sizes.append(len(x))
        if self.delay:
            threading.Event().wait(self.delay)
        return {"y": x * 2}


async def _submit_many(batcher: DynamicBatcher, arrays: list[np.ndarray[Any, Any]]) -> list[Any]:
    return await asyncio.gather(*(batcher.submit({"x": a}) for a in arrays), return_exceptions=True)


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = DoublingModel()

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=64, max_queue_delay_ms=50))
        batcher.start()
        try:
            return await _submit_many(batcher, [np.full((1, 2), i) for i in range(10)])
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert [r["y"].tolist() for r in results] == [[[2 * i, 2 * i]] for i in range(10)]
    assert model.batch_sizes == [10]
    assert all(name.startswith("model") for name in model.threads)


def test_batches_respect_the_row_limit() -> None:
    model = DoublingModel()

    async def scenario() -> None:
        batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=4, max_queue_delay_ms=20))
        batcher.start()
        try:
            await _submit_many(batcher, [np.ones((1, 1))] * 10)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert max(model.batch_sizes) <= 4
    assert sum(model.batch_sizes) == 10


def test_one_bad_request_does_not_fail_its_neighbours() -> None:
    model = DoublingModel()

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=64, max_queue_delay_ms=50))
        batcher.start()
        try:
            return await _submit_many(batcher, [np.ones((1, 1)), -np.ones((1, 1)), np.ones((1, 1))])
        finally:
            await batcher.stop()

    good, bad, also_good = asyncio.run(scenario())
    assert isinstance(bad, ModelCallError)
    assert "negative" in str(bad)
    assert good["y"].tolist() == [[2.0]]
    assert also_good["y"].tolist() == [[2.0]]


def test_requests_of_different_shapes_are_not_merged() -> None:
    model = DoublingModel()

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=64, max_queue_delay_ms=30))
        batcher.start()
        try:
            return await _submit_many(batcher, [np.ones((1, 2)), np.ones((1, 3)), np.ones((2, 2))])
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert [r["y"].shape for r in results] == [(1, 2), (1, 3), (2, 2)]
    assert sorted(model.batch_sizes) == [1, 3]


def test_requests_queue_up_while_the_model_computes() -> None:
    model = DoublingModel(delay=0.05)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=64, max_queue_delay_ms=0))
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 1))}))
            await asyncio.sleep(0.01)  # the first batch is running now
            await _submit_many(batcher, [np.ones((1, 1))] * 5)
            await first
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert model.batch_sizes == [1, 5]


def test_misaligned_outputs_are_reported() -> None:
    def summing_model(inputs: Arrays) -> Arrays:
        return {"total": np.asarray([inputs["x"].sum()])}

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(summing_model, BatchingConfig(max_queue_delay_ms=30))
        batcher.start()
        try:
            return await _submit_many(batcher, [np.ones((1, 1)), np.ones((2, 1))])
        finally:
            await batcher.stop()

    # Merged, the rows do not line up; one by one each request still gets its own answer.
    results = asyncio.run(scenario())
    assert [r["total"].tolist() for r in results] == [[1.0], [2.0]]


@pytest.mark.parametrize("delay_ms", [0.0, 5.0])
def test_a_lone_request_is_answered(delay_ms: float) -> None:
    async def scenario() -> Any:
        batcher = DynamicBatcher(DoublingModel(), BatchingConfig(max_queue_delay_ms=delay_ms))
        batcher.start()
        try:
            return await batcher.submit({"x": np.arange(3.0)})
        finally:
            await batcher.stop()

    assert asyncio.run(scenario())["y"].tolist() == [0.0, 2.0, 4.0]
