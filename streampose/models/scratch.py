"""Per-thread input buffers reused from one model call to the next.

A model call's input arrays (8 TinyPose crops of 128x96: 1.5 MB; a 320x320 detector batch of
one: 1.2 MB) allocated afresh each call come from newly mapped memory, and the kernel's page
faults and page zeroing cost more than filling them (measured in the graph on vtest.avi: the
pose workers spent a quarter of their own CPU in the kernel). The buffers are per thread because
one model is called at once by a graph's two pose workers and by every graph sharing it (one per
camera in ``bench-streams``); a thread's buffers go with it when it ends. Only calls of up to
``max_rows`` images or crops are kept, so an occasional huge crowd does not stay allocated.
"""

from __future__ import annotations

import threading

import numpy as np


class ThreadScratch:
    """Arrays keyed by name, row shape and dtype; each thread gets its own."""

    def __init__(self, max_rows: int, min_rows: int = 1) -> None:
        self.max_rows = int(max_rows)
        self.min_rows = max(1, int(min_rows))
        self._local = threading.local()

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An array of ``shape`` whose contents are undefined; valid until this thread asks again."""
        rows = int(shape[0])
        if rows > self.max_rows:
            return np.empty(shape, dtype)
        buffers: dict = self._local.__dict__
        key = (name, tuple(shape[1:]), np.dtype(dtype).str)
        buffer = buffers.get(key)
        if buffer is None or buffer.shape[0] < rows:
            buffer = buffers[key] = np.empty((max(rows, self.min_rows),) + tuple(shape[1:]), dtype)
        return buffer[:rows]
