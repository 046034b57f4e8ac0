"""Persistent person ids across frames: Kalman boxes associated to detections by IoU.

The tracker is what lets the detector skip frames. On every frame ``predict`` moves each box one
step along its constant-velocity model; on detector frames ``update`` matches detections to those
predicted boxes with the Hungarian algorithm (the globally best set of pairs, where a greedy
best-first match can steal a detection from the track that needed it), corrects the matched
tracks, starts new ones and retires old ones. Between detector frames the predicted boxes are
what the pose model crops, and ``refine`` feeds the pose back into the box.

A track only ever counts a *missed detection* on a frame where the detector ran, so with the
detector on every k-th frame tracks do not die k times sooner.

Frame loop for one source::

    tracks = tracker.predict()
    if schedule.should_detect(frame.index):
        tracks = tracker.update(boxes, scores)
        if tracker.needs_detection:
            schedule.request_detection()
    # pose on `tracks` (detection box where det_index is set, track.box otherwise), then
    tracker.refine(track.track_id, box_from_confident_keypoints)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from streampose.errors import ConfigError
from streampose.tracking.kalman import BoxKalman, KalmanNoise, xyxy_to_cxcywh


@dataclass(frozen=True)
class TrackerConfig:
    """Plain, picklable tracker settings.

    Defaults were measured on vtest.avi with PaddleX's own detections (tests/test_tracking.py):

    - ``iou_threshold`` 0.3: SORT's value; a walking person's predicted and detected boxes overlap
      well above it even with the detector every 3rd frame, while two people passing each other
      rarely exceed it for the wrong pair.
    - ``max_age`` 10 detector frames unmatched before a confirmed track dies (1 s at 10 fps with
      the detector on every frame, 3 s at every 3rd): long enough to bridge a person walking
      behind another, short enough that the id does not jump to a newcomer at the same spot.
      A track that misses is no longer posed, so a long ``max_age`` costs nothing on screen.
    - ``min_hits`` 2 detections before a track is posed: one-frame false positives never show,
      and a real person appears at most one detector frame late (the schedule re-detects at once
      while a track is tentative). Tracks born in the first ``min_hits`` detector frames of a
      stream are posed at once, so the first frame is not empty.
    - ``det_score_min`` 0.5 is the score needed to *start* a track (PaddleX's ``det_threshold``);
      weaker detections can still keep an existing track alive, so a detector run at a lower
      threshold bridges partial occlusions without spawning ghosts.
    - ``refine_noise_gain`` 3.0: a box from pose keypoints is measured with 3x the detector's
      noise std (9x variance). Keypoints are precise where they are confident but a keypoint
      extent is not the detector's box convention, and an occluded limb shifts it; a soft
      update corrects drift between detector frames without letting pose pull the box away.
    - ``reseed_on_recovery``: when a lost track is matched again, restart its filter at the new
      box with the velocity implied by its last two observations, instead of averaging in a
      prediction that has been coasting on stale velocity (OC-SORT's observation-centric idea).
    """

    iou_threshold: float = 0.3
    max_age: int = 10
    min_hits: int = 2
    det_score_min: float = 0.5
    refine_noise_gain: float = 3.0
    reseed_on_recovery: bool = True
    noise: KalmanNoise = field(default_factory=KalmanNoise)

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(f"tracker iou_threshold={self.iou_threshold}: must be in (0, 1]")
        if self.max_age < 0:
            raise ConfigError(f"tracker max_age={self.max_age}: must be >= 0")
        if self.min_hits < 1:
            raise ConfigError(f"tracker min_hits={self.min_hits}: must be >= 1")
        if self.refine_noise_gain <= 0:
            raise ConfigError(
                f"tracker refine_noise_gain={self.refine_noise_gain}: must be > 0"
            )


@dataclass(frozen=True, eq=False)
class Track:
    """A snapshot of one track on one frame, safe to hand to another thread.

    ``box`` is the filter's estimate (predicted, or corrected when a detection matched).
    ``det_index`` is the row of this frame's detections that matched, else ``None``; callers who
    want PaddleX-identical crops on detector frames use that detection's box instead of ``box``.
    ``time_since_update`` counts frames since the last matched detection (0 on a matched frame).
    """

    track_id: int
    box: np.ndarray
    score: float
    age: int
    hits: int
    time_since_update: int
    is_confirmed: bool
    det_index: int | None


class _TrackState:
    """The mutable record behind a :class:`Track`."""

    __slots__ = (
        "track_id", "kalman", "score", "age", "hits", "time_since_update", "misses",
        "is_confirmed", "det_index", "last_observation", "last_observation_frame",
    )

    def __init__(
        self, track_id: int, box: np.ndarray, score: float, frame: int, noise: KalmanNoise
    ) -> None:
        self.track_id = track_id
        self.kalman = BoxKalman(box, noise)
        self.score = score
        self.age = 0
        self.hits = 1
        self.time_since_update = 0
        self.misses = 0  # consecutive detector frames without a match
        self.is_confirmed = False
        self.det_index: int | None = None
        self.last_observation = np.asarray(box, dtype=np.float64).copy()
        self.last_observation_frame = frame

    @property
    def is_visible(self) -> bool:
        """Confirmed and matched on the latest detector frame: this track gets posed."""
        return self.is_confirmed and self.misses == 0

    def snapshot(self) -> Track:
        return Track(
            track_id=self.track_id,
            box=self.kalman.box.astype(np.float32),
            score=self.score,
            age=self.age,
            hits=self.hits,
            time_since_update=self.time_since_update,
            is_confirmed=self.is_confirmed,
            det_index=self.det_index,
        )


class BoxTracker:
    """SORT-style multi-person tracker for one source (keep one per camera or file)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 1 (a new video, not a reconnect)."""
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self._frame = 0
        self._detector_frames = 0
        self._updated_frame = -1
        self._lost_at_last_update = False

    @property
    def tracks(self) -> list[Track]:
        """Every live track, tentative and lost ones included."""
        return [t.snapshot() for t in self._tracks]

    @property
    def needs_detection(self) -> bool:
        """Whether the next frame should run the detector regardless of the schedule.

        True when nothing is being posed, when a posed track just missed its detection (it may
        have been occluded or left; look again before its prediction drifts), or while a track
        is tentative (it needs detections to be confirmed or dropped).
        """
        if self._lost_at_last_update:
            return True
        if not any(t.is_visible for t in self._tracks):
            return True
        return any(not t.is_confirmed for t in self._tracks)

    def predict(self) -> list[Track]:
        """Advance every track one frame; call once per frame, before ``update``.

        Returns the tracks to pose on a frame where the detector does not run.
        """
        self._frame += 1
        for track in self._tracks:
            track.kalman.predict()
            track.age += 1
            track.time_since_update += 1
            track.det_index = None
        return [t.snapshot() for t in self._tracks if t.is_visible]

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> list[Track]:
        """Associate this detector frame's ``(N, 4)`` xyxy boxes and ``(N,)`` scores.

        Returns the tracks to pose on this frame, each with ``det_index`` set when a detection
        matched it.
        """
        boxes, scores = _as_detections(boxes, scores)
        if self._updated_frame == self._frame:
            raise RuntimeError("BoxTracker.update called twice for one frame; call predict first")
        self._updated_frame = self._frame
        self._detector_frames += 1

        predicted = np.array([t.kalman.box for t in self._tracks]).reshape(-1, 4)
        matches, unmatched_tracks, unmatched_dets = associate(
            predicted, boxes, self.config.iou_threshold
        )
        for track_row, det_row in matches:
            self._apply_detection(self._tracks[track_row], boxes[det_row], scores[det_row], det_row)
        self._lost_at_last_update = self._age_unmatched(unmatched_tracks)
        for det_row in unmatched_dets:
            if scores[det_row] >= self.config.det_score_min:
                self._birth(boxes[det_row], float(scores[det_row]), det_row)
        return [t.snapshot() for t in self._tracks if t.is_visible]

    def refine(self, track_id: int, box_xyxy: np.ndarray) -> bool:
        """Softly correct a track with a box derived from its pose keypoints.

        Uses ``config.refine_noise_gain`` times the detector's measurement noise. It does not
        count as a detection: hits, misses and ``time_since_update`` are untouched, so pose alone
        can never keep a track alive. Returns False when the track no longer exists (it may have
        died while the pose was computed).
        """
        for track in self._tracks:
            if track.track_id == track_id:
                track.kalman.update(
                    np.asarray(box_xyxy, dtype=np.float64), self.config.refine_noise_gain
                )
                return True
        return False

    def _apply_detection(
        self, track: _TrackState, box: np.ndarray, score: float, det_row: int
    ) -> None:
        if track.misses > 0 and self.config.reseed_on_recovery:
            frames = max(self._frame - track.last_observation_frame, 1)
            velocity = (xyxy_to_cxcywh(box) - xyxy_to_cxcywh(track.last_observation)) / frames
            track.kalman.reseed(box, velocity)
        else:
            track.kalman.update(box)
        track.score = float(score)
        track.hits += 1
        track.time_since_update = 0
        track.misses = 0
        track.det_index = int(det_row)
        track.last_observation = box.copy()
        track.last_observation_frame = self._frame
        if track.hits >= self.config.min_hits:
            track.is_confirmed = True

    def _age_unmatched(self, unmatched_rows: list[int]) -> bool:
        """Count a miss on unmatched tracks, drop dead ones; True if a posed track was lost."""
        lost_visible = False
        dead: set[int] = set()
        for row in unmatched_rows:
            track = self._tracks[row]
            lost_visible = lost_visible or track.is_visible
            track.misses += 1
            # A tentative track that misses was most likely a false positive.
            if not track.is_confirmed or track.misses > self.config.max_age:
                dead.add(row)
        if dead:
            self._tracks = [t for i, t in enumerate(self._tracks) if i not in dead]
        return lost_visible

    def _birth(self, box: np.ndarray, score: float, det_row: int) -> None:
        track = _TrackState(self._next_id, box, score, self._frame, self.config.noise)
        self._next_id += 1
        track.det_index = int(det_row)
        # Startup: tracks found in the first detector frames are posed at once.
        track.is_confirmed = (
            track.hits >= self.config.min_hits
            or self._detector_frames <= self.config.min_hits - 1
        )
        self._tracks.append(track)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(M, 4)`` and ``(N, 4)`` xyxy boxes, shape ``(M, N)``."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def associate(
    track_boxes: np.ndarray, det_boxes: np.ndarray, iou_threshold: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Match tracks to detections maximising total IoU over pairs at or above the threshold.

    Pairs below the threshold count as zero before the assignment (not rejected after it), so the
    solver maximises the number and quality of *valid* pairs rather than trading a valid pair
    for an invalid one. Returns ``(matches, unmatched_track_rows, unmatched_det_rows)``.
    """
    n_tracks, n_dets = len(track_boxes), len(det_boxes)
    if n_tracks == 0 or n_dets == 0:
        return [], list(range(n_tracks)), list(range(n_dets))
    iou = iou_matrix(track_boxes, det_boxes)
    gain = np.where(iou >= iou_threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols) if gain[r, c] > 0.0]
    matched_tracks = {r for r, _ in matches}
    matched_dets = {c for _, c in matches}
    return (
        matches,
        [r for r in range(n_tracks) if r not in matched_tracks],
        [c for c in range(n_dets) if c not in matched_dets],
    )


def _as_detections(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"detection boxes must have shape (N, 4), got {boxes.shape}")
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} detection boxes but {len(scores)} scores")
    return boxes, scores
