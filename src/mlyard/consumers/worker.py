"""The consumer loop: receive a batch, fetch and decode its objects, run the model once per
batch, publish the results, and only then acknowledge (at-least-once).

One batch is in flight per worker: nothing more is received until its results are published,
which bounds memory when the model is slower than the queue (backpressure). A malformed message,
a missing object or undecodable content is dead-lettered at once; other failures are released
for redelivery and dead-lettered after ``max_attempts`` deliveries.

The broker calls stay in this thread. Handing them to other threads, so that receiving the next
batch overlaps processing this one, made the worker slower (measured): CPython gives a thread
that comes back from a broker call the interpreter lock only after the processing thread's
switch interval (5 ms), and a batch makes several such calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlyard.consumers import metrics
from mlyard.consumers.base import AtomicCompletion, Delivery, Sink, Source
from mlyard.consumers.decoders import Decoder
from mlyard.consumers.fetch import ObjectFetcher, ObjectMissingError, ObjectStoreUnavailableError
from mlyard.consumers.messages import (
    EventMessage,
    MalformedMessageError,
    encode_dead_letter,
    encode_result,
    parse_message,
)
from mlyard.consumers.model import Predict
from mlyard.errors import BackendError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker batches and retries."""

    #: Most messages received, and most inputs per model call.
    batch_size: int = 64
    #: Longest wait for the first message of a batch (how often a stop request is noticed).
    receive_timeout: float = 1.0
    #: Once a message is in hand, how long to wait for more to fill the batch.
    max_wait: float = 0.05
    #: Deliveries of a message whose failures were retryable before it is dead-lettered.
    max_attempts: int = 3


#: The lag gauge is refreshed at most this often (a broker round trip, or a count, each time).
LAG_REFRESH_SECONDS = 1.0


class PermanentFailureError(Exception):
    """Retrying cannot help (missing object, undecodable content): dead-letter at once."""


@dataclass(slots=True)
class _Work:
    delivery: Delivery
    message: EventMessage
    samples: list[tuple[str, np.ndarray[Any, Any]]] = field(default_factory=list)
    predictions: dict[int, Any] = field(default_factory=dict)


@dataclass
class _Outcome:
    """A processed batch, ready to publish and acknowledge: what ``_complete`` does."""

    results: list[bytes]
    dead_letters: list[bytes]
    #: The fixed prefix of each dead letter's reason ("missing object", ...): a bounded label.
    dead_reasons: list[str]
    done: list[Delivery]
    retry: list[Delivery]


@contextmanager
def _stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)


class ConsumerWorker:
    """One group member: receives, processes and acknowledges one batch at a time."""

    def __init__(
        self,
        *,
        source: Source,
        sink: Sink,
        dead_letters: Sink,
        fetcher: ObjectFetcher,
        decode: Decoder,
        model_name: str,
        predict: Predict,
        options: WorkerOptions,
    ) -> None:
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        self.fetcher = fetcher
        self.decode = decode
        self.model_name = model_name
        self.predict = predict
        self.options = options
        self._lag_measured_at = -LAG_REFRESH_SECONDS

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished first."""
        backoff = 0.5
        while not stop.is_set():
            try:
                deliveries = self.receive_batch()
                if deliveries:
                    self.process(deliveries)
                self._refresh_lag()
                backoff = 0.5
            except BackendError as error:
                # The broker or the object store is away. Unacknowledged messages come back
                # after the broker's visibility timeout; a batch the store failed is released.
                away = (
                    "object store" if isinstance(error, ObjectStoreUnavailableError) else "broker"
                )
                logger.warning("%s unavailable, retrying in %.1f s: %s", away, backoff, error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_measured_at >= LAG_REFRESH_SECONDS:
            self._lag_measured_at = now
            lag = self.source.lag()
            if lag is not None:
                metrics.LAG.set(lag)

    def receive_batch(self) -> list[Delivery]:
        """Up to ``batch_size`` deliveries: after the first, wait at most ``max_wait`` for more."""
        size = self.options.batch_size
        deliveries = self.source.receive(size, self.options.receive_timeout)
        if not deliveries or len(deliveries) >= size or self.options.max_wait <= 0:
            return deliveries
        deadline = time.monotonic() + self.options.max_wait
        while len(deliveries) < size and (remaining := deadline - time.monotonic()) > 0:
            more = self.source.receive(size - len(deliveries), remaining)
            if not more:
                break
            deliveries.extend(more)
        return deliveries

    def process(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch to the end: results or dead letters published, then acknowledged
        (or released for a retry). Raises ``BackendError`` when the sink cannot publish; the
        batch is then left unacknowledged and comes back after the visibility timeout; and
        ``ObjectStoreUnavailableError`` when the object store cannot be reached: the batch is
        then released at once, no message dead-lettered for it."""
        started = time.monotonic()
        try:
            outcome = self._prepare(deliveries)
        except ObjectStoreUnavailableError:
            self.source.release(deliveries)
            raise
        self._complete(outcome)
        elapsed = time.monotonic() - started
        if elapsed > self.source.visibility:
            metrics.OVERDUE_BATCHES.inc()
            logger.warning(
                "a batch of %d messages took %.1f s, longer than the source's visibility of "
                "%g s: other workers may have received them again. Set visibility=SECONDS in "
                "the source URL above the slowest batch, or lower --batch-size.",
                len(deliveries),
                elapsed,
                self.source.visibility,
            )

    def _prepare(self, deliveries: Sequence[Delivery]) -> _Outcome:
        """Everything but the broker calls: parse, fetch, decode, predict, encode."""
        metrics.MESSAGES_IN.inc(len(deliveries))
        work: list[_Work] = []
        dead: list[tuple[Delivery, str, Any]] = []
        retry: list[tuple[Delivery, str, Any]] = []
        for delivery in deliveries:
            try:
                work.append(_Work(delivery, parse_message(delivery.payload)))
            except MalformedMessageError as exc:
                dead.append((delivery, f"malformed message: {exc}", _text(delivery.payload)))
        work, failed = self._fetch_and_decode(work)
        for item, reason, permanent in failed:
            (dead if permanent else retry).append((item.delivery, reason, item.message.raw))
        with _stage("predict"):
            work, model_failures = self._predict_isolating_failures(work)
        retry.extend(
            (item.delivery, f"model failed: {error}", item.message.raw)
            for item, error in model_failures
        )
        dead.extend(entry for entry in retry if entry[0].attempts >= self.options.max_attempts)
        retry = [entry for entry in retry if entry[0].attempts < self.options.max_attempts]
        with _stage("encode"):
            results = [self._result(item) for item in work]
        return _Outcome(
            results=results,
            dead_letters=[encode_dead_letter(reason, d.attempts, data) for d, reason, data in dead],
            dead_reasons=[reason.split(":")[0] for _, reason, _ in dead],
            done=[item.delivery for item in work] + [d for d, _, _ in dead],
            retry=[d for d, _, _ in retry],
        )

    def _complete(self, outcome: _Outcome) -> None:
        """Publish the results and dead letters, and only then acknowledge their messages:
        in one step where the source can do both on its own broker."""
        outputs = [
            (sink, payloads)
            for sink, payloads in (
                (self.sink, outcome.results),
                (self.dead_letters, outcome.dead_letters),
            )
            if payloads
        ]
        with _stage("publish"):
            if outputs or outcome.done:  # not when every message is released for a retry
                self._publish_then_acknowledge(outputs, outcome.done)
        metrics.MESSAGES_OUT.inc(len(outcome.results))
        for reason in outcome.dead_reasons:
            metrics.DEAD_LETTERS.labels(reason).inc()
        if outcome.retry:
            self.source.release(outcome.retry)

    def _publish_then_acknowledge(
        self, outputs: list[tuple[Sink, list[bytes]]], done: list[Delivery]
    ) -> None:
        if isinstance(self.source, AtomicCompletion) and self.source.publish_and_acknowledge(
            outputs, done
        ):
            return
        for sink, payloads in outputs:
            sink.publish(payloads)
        # Only now, with results and dead letters durable, the messages are done.
        self.source.acknowledge(done)

    def _fetch_and_decode(
        self, work: list[_Work]
    ) -> tuple[list[_Work], list[tuple[_Work, str, bool]]]:
        keys = [key for item in work for key in item.message.objects]
        with _stage("fetch"):
            blobs = self.fetcher.fetch_all(keys)
        for blob in blobs:
            if isinstance(blob, ObjectStoreUnavailableError):
                raise blob
        ready: list[_Work] = []
        failed: list[tuple[_Work, str, bool]] = []
        end = 0
        with _stage("decode"):
            for item in work:
                start, end = end, end + len(item.message.objects)
                try:
                    for position in range(start, end):
                        key, blob = keys[position], blobs[position]
                        if isinstance(blob, Exception):
                            if isinstance(blob, ObjectMissingError):
                                raise PermanentFailureError(f"missing object: {blob}")
                            raise blob
                        try:
                            samples = self.decode(blob)
                        except Exception as exc:
                            raise PermanentFailureError(
                                f"undecodable object: {key}: {exc}"
                            ) from exc
                        if len(samples) == 1:  # the common case, without a list comprehension
                            item.samples.append((key, samples[0]))
                        else:
                            item.samples += [(key, sample) for sample in samples]
                    ready.append(item)
                except PermanentFailureError as exc:
                    failed.append((item, str(exc), True))
                except Exception as exc:
                    failed.append((item, f"fetch failed: {exc}", False))
        return ready, failed

    def _predict_isolating_failures(
        self, work: list[_Work]
    ) -> tuple[list[_Work], list[tuple[_Work, Exception]]]:
        """Predict the whole batch at once; when that fails, each message alone, so that one
        bad message does not use up the attempts of the others that shared its batch."""
        try:
            self._predict(work)
            return work, []
        except Exception as exc:
            if len(work) <= 1:
                logger.warning("model failed: %s", exc)
                return [], [(item, exc) for item in work]
            logger.warning("model failed on a batch of %d, retrying one by one: %s", len(work), exc)
        done: list[_Work] = []
        failed: list[tuple[_Work, Exception]] = []
        for item in work:
            item.predictions.clear()
            try:
                self._predict([item])
                done.append(item)
            except Exception as exc:
                failed.append((item, exc))
        return done, failed

    def _predict(self, work: list[_Work]) -> None:
        """One model call per batch of same-shaped inputs across all messages."""
        # shape -> the (message, sample index) of each input of that shape, and the inputs
        by_shape: dict[tuple[int, ...], tuple[list[tuple[_Work, int]], list[Any]]] = {}
        for item in work:
            for index, (_, sample) in enumerate(item.samples):
                group = by_shape.get(sample.shape)
                if group is None:
                    group = by_shape[sample.shape] = ([], [])
                group[0].append((item, index))
                group[1].append(sample)
        for members, inputs in by_shape.values():
            for start in range(0, len(members), self.options.batch_size):
                chunk = members[start : start + self.options.batch_size]
                metrics.BATCH_SIZE.observe(len(chunk))
                predictions = self.predict(np.stack(inputs[start : start + len(chunk)]))
                for (item, index), prediction in zip(chunk, predictions, strict=True):
                    item.predictions[index] = prediction

    def _result(self, item: _Work) -> bytes:
        if len(item.samples) == 1 == len(item.message.objects):  # the common case
            return encode_result(
                item.message, self.model_name, [(item.samples[0][0], [item.predictions[0]])]
            )
        per_object: dict[str, list[Any]] = {key: [] for key in item.message.objects}
        for index, (key, _) in enumerate(item.samples):
            per_object[key].append(item.predictions[index])
        return encode_result(item.message, self.model_name, list(per_object.items()))


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace")[:10_000]
