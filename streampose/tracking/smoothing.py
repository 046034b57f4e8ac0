"""Keypoint jitter removal with the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012).

Heatmap keypoints jitter by a few pixels from frame to frame even on a person standing still,
which reads as trembling skeletons. A fixed low-pass filter would fix that and make moving limbs
lag. The One-Euro filter is a low-pass filter whose cutoff rises with speed: near-still joints are
smoothed hard, fast joints barely, so jitter goes and motion stays.

Per joint, with ``dt`` the time since the previous sample::

    speed   = |low-pass(dx/dt, d_cutoff)|          # pixels per second
    cutoff  = min_cutoff + beta * speed            # Hz
    x_hat   = low-pass(x, cutoff)

The speed is the length of the joint's 2-D velocity, so x and y of one joint share a cutoff and
the filter behaves the same whichever way a limb moves. Timestamps are real seconds, so the
filter behaves the same at 10, 25 or 30 fps and across dropped frames.

Defaults (keypoints in pixels, 10-30 fps), measured in tests/test_smoothing.py and on
PaddleX's own keypoints for vtest.avi (10 fps, people about 80 px tall):

- ``min_cutoff`` 1.0 Hz: a still joint's 2 px jitter shrinks about 3x at 30 fps and 2x at
  10 fps (fewer samples per second leave less to average). Lower values smooth more but make
  slow motion visibly lag.
- ``beta`` 0.01 s/px: a joint moving at 100 px/s gets a 2 Hz cutoff, at 500 px/s 6 Hz, so a
  sudden 100 px move is within 10 px of its target 2 frames later at 30 fps, and a steady
  100 px/s motion trails by about 5 px. On vtest.avi it halves the frame-to-frame jitter
  (mean second difference 2.7 px -> 1.4 px) while joints stay about 2.3 px from the raw ones;
  beta 0.02 keeps them closer but removes only about 40 % of the jitter.
- ``d_cutoff`` 1.0 Hz: the paper's value; the speed estimate must itself be calm or jitter
  would open the cutoff.

Speeds are in pixels, so a close-up at 1080p moves more pixels per second and is smoothed less
than a distant person; that matches its jitter, which also grows in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from streampose.errors import ConfigError


def _smoothing_factor(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
    """Exponential smoothing weight of a first-order low-pass at ``cutoff`` Hz over ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over an ``(J, 2)`` array of points, one cutoff per point."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ConfigError(
                f"One-Euro min_cutoff={min_cutoff}, beta={beta}, d_cutoff={d_cutoff}: "
                "cutoffs must be > 0 and beta >= 0"
            )
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes through unchanged."""
        self._value: np.ndarray | None = None
        self._velocity: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, points: np.ndarray, t: float) -> np.ndarray:
        """Filter ``points`` (``(J, 2)``, pixels) observed at time ``t`` (seconds)."""
        x = np.asarray(points, dtype=np.float64)
        if self._value is None or self._t is None or self._value.shape != x.shape or t < self._t:
            # First sample, a different skeleton layout, or time went backwards (a restarted
            # source): start over from this sample.
            self._value = x.copy()
            self._velocity = np.zeros_like(x)
            self._t = t
            return x.copy()
        dt = t - self._t
        if dt == 0.0:
            return self._value.copy()  # the same instant again: nothing new to learn
        a_d = _smoothing_factor(dt, self.d_cutoff)
        # Low-pass the velocity *vector*, then take its length: jitter's random directions
        # average out, where averaging the length of each raw velocity would not.
        self._velocity = self._velocity + a_d * ((x - self._value) / dt - self._velocity)
        cutoff = self.min_cutoff + self.beta * np.linalg.norm(self._velocity, axis=-1)
        a = _smoothing_factor(dt, cutoff)[..., None]
        self._value = self._value + a * (x - self._value)
        self._t = t
        return self._value.copy()


class KeypointSmoother:
    """One :class:`OneEuroFilter` per track id; keypoint scores pass through untouched."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0) -> None:
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # validate once, here, not on first use
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._filters: dict[int, OneEuroFilter] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def smooth(self, track_id: int, keypoints: np.ndarray, t: float) -> np.ndarray:
        """Smooth one person's ``(K, 3)`` ``(x, y, score)`` keypoints at time ``t`` seconds."""
        kpts = np.asarray(keypoints)
        if kpts.ndim != 2 or kpts.shape[1] != 3:
            raise ValueError(f"keypoints must have shape (K, 3), got {kpts.shape}")
        filt = self._filters.get(track_id)
        if filt is None:
            filt = self._filters[track_id] = OneEuroFilter(
                self.min_cutoff, self.beta, self.d_cutoff
            )
        out = np.array(kpts, copy=True)
        out[:, :2] = filt(kpts[:, :2], t)
        return out

    def reset(self, track_id: int) -> None:
        """Forget a track's history (call when a track is born so an id never inherits one)."""
        self._filters.pop(track_id, None)

    def prune(self, alive_ids: Iterable[int]) -> None:
        """Drop filters of tracks not in ``alive_ids`` so memory stays flat on long runs."""
        keep = set(alive_ids)
        for track_id in [i for i in self._filters if i not in keep]:
            del self._filters[track_id]
