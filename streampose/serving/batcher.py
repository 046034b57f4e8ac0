"""Micro-batching: requests that arrive within a few milliseconds share one model call.

PaddleX serialises pipeline calls, so N concurrent requests cost N detector calls and one pose
call per person. Here a single inference thread owns the pipeline; it takes the first waiting
request, keeps collecting for ``max_wait_s`` (or until ``max_batch`` images), and runs one
``predict_images`` call per distinct detection threshold: one detector batch and one pose batch
for every person of every image. Callers get a :class:`concurrent.futures.Future` each, so the
event loop never blocks on inference and the model is never used by two threads at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

# images, threshold (None: the pipeline's own) → one result per image, in order
BatchFunction = Callable[[list[np.ndarray], float | None], Sequence[object]]


@dataclass
class _Request:
    image: np.ndarray
    threshold: float | None
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the batcher did, for /health-style reporting and for tests that prove batching."""

    calls: int = 0  # model calls (one per threshold group per batch)
    images: int = 0
    largest: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.images / self.calls if self.calls else 0.0


class BatcherClosed(RuntimeError):
    """Raised for requests submitted after :meth:`MicroBatcher.close`."""


class MicroBatcher:
    """One inference thread that groups concurrent single-image requests into batches."""

    def __init__(self, run_batch: BatchFunction, *, max_batch: int = 8, max_wait_s: float = 0.005,
                 name: str = "streampose-batcher") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._pending: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray, threshold: float | None = None) -> Future:
        """Queue one image; the future resolves to its result (or the model's exception)."""
        with self._lock:  # no request may slip in behind the closing sentinel
            if self._closed.is_set():
                raise BatcherClosed("the inference thread has been stopped")
            request = _Request(image, threshold)
            self._pending.put(request)
        return request.future

    def close(self, timeout: float = 10.0) -> None:
        """Finish the requests already queued, then stop the thread."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self._pending.put(None)
        self._thread.join(timeout)

    # -- the inference thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch, closing = self._collect(first)
            self._run(batch)
            if closing:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """Gather what arrives within ``max_wait_s`` of the first request (up to ``max_batch``)."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._pending.get(timeout=remaining) if remaining > 0 else self._pending.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        groups: dict[float | None, list[_Request]] = {}
        for request in batch:
            groups.setdefault(request.threshold, []).append(request)
        for threshold, requests in groups.items():
            live = [request for request in requests if request.future.set_running_or_notify_cancel()]
            if live:
                self._run_group(live, threshold)

    def _run_group(self, requests: list[_Request], threshold: float | None) -> None:
        try:
            results = self._run_batch([request.image for request in requests], threshold)
            if len(results) != len(requests):
                raise RuntimeError(f"batch of {len(requests)} images gave {len(results)} results")
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiting requests
            if len(requests) > 1:
                # One bad image must not fail its neighbours: retry each alone.
                for request in requests:
                    self._run_group_single(request, threshold)
                return
            requests[0].future.set_exception(exc)
            return
        self._count(len(requests))
        for request, result in zip(requests, results):
            request.future.set_result(result)

    def _run_group_single(self, request: _Request, threshold: float | None) -> None:
        try:
            result = self._run_batch([request.image], threshold)[0]
        except BaseException as exc:  # noqa: BLE001
            request.future.set_exception(exc)
            return
        self._count(1)
        request.future.set_result(result)

    def _count(self, size: int) -> None:
        self.stats.calls += 1
        self.stats.images += size
        self.stats.largest = max(self.stats.largest, size)
