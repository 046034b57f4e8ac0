"""Bounded queues between stages, with the two policies the streaming rules ask for.

Files must never lose a frame, so a full queue blocks the producer (backpressure). Live sources
must never fall behind, so a full queue drops its oldest item and counts it. Every blocking call
waits in short slices and gives up when the graph is stopping, so no thread can hang on a queue.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")

WAIT_SLICE_S = 0.05


class Closed(Exception):
    """The graph is stopping; the caller should leave its loop."""


class StageQueue(Generic[T]):
    def __init__(self, maxsize: int, stop: threading.Event, *, drop_oldest: bool = False) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self.maxsize = maxsize
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self.max_depth = 0
        self._items: collections.deque[T] = collections.deque()
        self._stop = stop
        self._condition = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, *, force: bool = False) -> T | None:
        """Add ``item``; returns the item dropped to make room (drop-oldest), if any.

        ``force`` bypasses the size limit (end-of-stream markers must always get through).
        """
        with self._condition:
            dropped = None
            while not force and len(self._items) >= self.maxsize:
                if self.drop_oldest:
                    dropped = self._items.popleft()
                    self.dropped += 1
                    break
                if self._stop.is_set():
                    raise Closed
                self._condition.wait(WAIT_SLICE_S)
            self._items.append(item)
            self.max_depth = max(self.max_depth, len(self._items))
            self._condition.notify_all()
            return dropped

    def get(self) -> T:
        """Wait for the next item; raises :class:`Closed` when the graph stops first."""
        with self._condition:
            while not self._items:
                if self._stop.is_set():
                    raise Closed
                self._condition.wait(WAIT_SLICE_S)
            item = self._items.popleft()
            self._condition.notify_all()
            return item
