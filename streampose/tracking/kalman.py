"""A constant-velocity Kalman filter for one person box.

The state is ``(cx, cy, w, h, vcx, vcy, vw, vh)``: centre, size and their per-frame rates. Width and
height are tracked directly (not SORT's area and aspect ratio) because a walking person's width
swings with the stride while the height barely moves; separate axes let each move at its own pace.

Every noise term is a fraction of the box's current size (width for x terms, height for y
terms), re-computed before each step, so the covariance is in proportion to the person: a 2 px
jitter is noise on a 1080p close-up and a real move on a 40 px far-away figure. Together with
IoU matching this leaves no pixel constant deciding anything (except a 1 px floor on the size),
so a scene tracks the same at 192 px and at 1080p.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from filterpy.kalman import KalmanFilter

_STATE_DIM = 8
_MEASURE_DIM = 4
# Smallest width/height kept, in pixels: a box that shrinks to nothing would make every
# size-scaled noise term zero and freeze the filter.
_MIN_SIZE = 1.0


@dataclass(frozen=True)
class KalmanNoise:
    """Noise standard deviations as fractions of the box's width (x terms) or height (y terms).

    Positions and measurements use DeepSORT's 1/20. Velocities are looser than DeepSORT's 1/160
    (process) and 10/160 (at birth): on vtest.avi at 10 fps people move 3-7 px a frame on a
    30-45 px wide box, and with the detector every 3rd frame the tighter values could not learn
    a newborn track's speed before its prediction slid off the person (with on-demand
    detection, many tracks were lost after two hits: 104 ids instead of 69; mean IoU of
    predicted boxes 0.756 -> 0.766 with these values at a fixed every-3rd-frame cadence).
    """

    position: float = 1.0 / 20.0
    velocity: float = 1.0 / 80.0
    measurement: float = 1.0 / 20.0
    initial_velocity: float = 1.0 / 8.0


def xyxy_to_cxcywh(box_xyxy: np.ndarray) -> np.ndarray:
    """Corner box to centre/size, as float64 for the filter's arithmetic."""
    x1, y1, x2, y2 = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1])


def cxcywh_to_xyxy(box_cxcywh: np.ndarray) -> np.ndarray:
    """Centre/size box to corners."""
    cx, cy, w, h = np.asarray(box_cxcywh, dtype=np.float64).reshape(4)
    return np.array([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0])


class BoxKalman:
    """Kalman filter over one box; ``predict`` once per frame, ``update`` when a box is measured."""

    def __init__(self, box_xyxy: np.ndarray, noise: KalmanNoise | None = None) -> None:
        self._noise = noise or KalmanNoise()
        measured = _sanitize(xyxy_to_cxcywh(box_xyxy))
        kf = KalmanFilter(dim_x=_STATE_DIM, dim_z=_MEASURE_DIM)
        kf.F = np.eye(_STATE_DIM)
        kf.F[:4, 4:] = np.eye(4)  # position += velocity, one frame per step
        kf.H = np.eye(_MEASURE_DIM, _STATE_DIM)
        kf.x = np.concatenate([measured, np.zeros(4)]).reshape(_STATE_DIM, 1)
        # At birth the position is as good as one measurement, the velocity is unknown: start it
        # wide (10x the process noise, as DeepSORT does) so the second measurement sets it.
        scale = _axis_scale(measured)
        kf.P = np.diag(
            np.concatenate(
                [
                    (2.0 * self._noise.position * scale) ** 2,
                    (self._noise.initial_velocity * scale) ** 2,
                ]
            )
        )
        self._kf = kf

    @property
    def box(self) -> np.ndarray:
        """Current estimate as ``(x1, y1, x2, y2)``."""
        return cxcywh_to_xyxy(self._kf.x[:4, 0])

    @property
    def velocity(self) -> np.ndarray:
        """Per-frame rate of ``(cx, cy, w, h)``."""
        return self._kf.x[4:, 0].copy()

    def predict(self) -> np.ndarray:
        """Advance one frame; returns the predicted ``xyxy`` box."""
        state = self._kf.x[:, 0]
        # A shrinking box must not pass through zero size: stop the shrink instead.
        for axis in (2, 3):
            if state[axis] + state[axis + 4] < _MIN_SIZE:
                self._kf.x[axis + 4, 0] = 0.0
        scale = _axis_scale(self._kf.x[:4, 0])
        self._kf.Q = np.diag(
            np.concatenate(
                [(self._noise.position * scale) ** 2, (self._noise.velocity * scale) ** 2]
            )
        )
        self._kf.predict()
        self._clamp_size()
        return self.box

    def update(self, box_xyxy: np.ndarray, noise_gain: float = 1.0) -> np.ndarray:
        """Correct with a measured box; ``noise_gain`` multiplies the measurement std.

        A gain above 1 makes the measurement count for less (used for pose-derived boxes).
        Returns the corrected ``xyxy`` box.
        """
        measured = _sanitize(xyxy_to_cxcywh(box_xyxy))
        scale = _axis_scale(self._kf.x[:4, 0])
        self._kf.R = np.diag((noise_gain * self._noise.measurement * scale) ** 2)
        self._kf.update(measured.reshape(_MEASURE_DIM, 1))
        self._clamp_size()
        return self.box

    def reseed(self, box_xyxy: np.ndarray, velocity: np.ndarray) -> None:
        """Restart at a measured box with a known per-frame velocity of ``(cx, cy, w, h)``.

        After a track was unseen for a while its predicted motion is stale; starting again from
        the new observation and the velocity implied by the last two observations (the idea
        behind OC-SORT's observation-centric re-update) avoids a long correction transient.
        """
        measured = _sanitize(xyxy_to_cxcywh(box_xyxy))
        self._kf.x = np.concatenate([measured, np.asarray(velocity, dtype=np.float64)]).reshape(
            _STATE_DIM, 1
        )
        scale = _axis_scale(measured)
        self._kf.P = np.diag(
            np.concatenate(
                [
                    (2.0 * self._noise.position * scale) ** 2,
                    (self._noise.initial_velocity * scale) ** 2,
                ]
            )
        )

    def _clamp_size(self) -> None:
        self._kf.x[2:4, 0] = np.maximum(self._kf.x[2:4, 0], _MIN_SIZE)


def _axis_scale(cxcywh: np.ndarray) -> np.ndarray:
    """Per-component size scale: width for the x terms, height for the y terms."""
    w = max(float(cxcywh[2]), _MIN_SIZE)
    h = max(float(cxcywh[3]), _MIN_SIZE)
    return np.array([w, h, w, h])


def _sanitize(cxcywh: np.ndarray) -> np.ndarray:
    """Reject NaN/inf boxes and lift a zero or negative measured size to the minimum."""
    if not np.all(np.isfinite(cxcywh)):
        raise ValueError(f"box has non-finite coordinates: {cxcywh.tolist()}")
    out = cxcywh.copy()
    out[2:4] = np.maximum(out[2:4], _MIN_SIZE)
    return out
