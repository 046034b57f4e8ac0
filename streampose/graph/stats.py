"""Per-stage figures: throughput, latency (mean, p95), queue depth and drops."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

WINDOW = 512  # latencies kept for percentiles: bounded, so memory stays flat on long runs


@dataclass
class StageStats:
    name: str
    items: int = 0
    busy_s: float = 0.0
    started_at: float = field(default_factory=time.perf_counter)
    recent_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=WINDOW))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, seconds: float, items: int = 1) -> None:
        with self._lock:
            self.items += items
            self.busy_s += seconds
            per_item_ms = seconds * 1000.0 / max(items, 1)
            for _ in range(items):
                self.recent_ms.append(per_item_ms)

    def summary(self) -> dict:
        with self._lock:
            recent = np.asarray(self.recent_ms, dtype=np.float64)
            elapsed = max(time.perf_counter() - self.started_at, 1e-9)
            return {
                "stage": self.name,
                "items": self.items,
                "fps": self.items / elapsed,
                "mean_ms": float(recent.mean()) if recent.size else 0.0,
                "p95_ms": float(np.percentile(recent, 95)) if recent.size else 0.0,
                "busy_s": self.busy_s,
            }


class LatencyTracker:
    """Decode-to-render latency per frame (bounded window)."""

    def __init__(self) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=WINDOW * 4)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._recent.append(seconds * 1000.0)

    def summary(self) -> dict:
        with self._lock:
            values = np.asarray(self._recent, dtype=np.float64)
        if values.size == 0:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
        return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
                "max_ms": float(values.max())}
