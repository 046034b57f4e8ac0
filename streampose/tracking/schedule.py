"""When the detector runs: every k-th frame, and at once when the tracker asks.

The detector costs several times the pose model, so on most frames the tracker's predicted boxes
stand in for it. Predictions drift and new people walk in, hence the fixed cadence; and when the
tracker has nothing to pose, or just lost someone, waiting up to k-1 frames would show an empty or
stale scene, hence the on-demand run.

The cadence counts frame *indices* since the last detection, not calls: a live source that drops
frames jumps its indices, and a detection is then due as soon as k indices have passed. An
on-demand detection restarts the cadence, so it is not followed by a redundant scheduled one.
"""

from __future__ import annotations

from streampose.errors import ConfigError


class DetectionSchedule:
    """Per-source decision, one call per frame, of whether to run the detector."""

    def __init__(self, interval: int = 1) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"detection interval={interval!r}: must be an integer >= 1")
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        """Start over: the next frame runs the detector."""
        self._last_detect_index: int | None = None
        self._requested = True

    def request_detection(self) -> None:
        """Run the detector on the next frame whatever the cadence says."""
        self._requested = True

    def should_detect(self, frame_index: int) -> bool:
        """Whether the detector runs on ``frame_index``; a True answer is recorded as a run."""
        due = (
            self._requested
            or self._last_detect_index is None
            or frame_index - self._last_detect_index >= self.interval
            # Indices going backwards mean the source restarted (e.g. a reconnect).
            or frame_index < self._last_detect_index
        )
        if due:
            self._last_detect_index = frame_index
            self._requested = False
        return due
