"""Per-source person state between frames: which boxes to pose, track ids, refinement, smoothing.

On detector frames every detection above the threshold is posed with its own box (the crops are
then exactly PaddleX's), and the tracker only lends it an id. In between, the tracker's predicted
boxes are posed, and each person's keypoints correct its box for the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streampose.models.detector import Detections
from streampose.models.keypoints import PoseBatch
from streampose.tracking import BoxTracker, DetectionSchedule, KeypointSmoother, TrackerConfig

CONFIDENT_JOINT = 0.3
MIN_CONFIDENT_JOINTS = 8


@dataclass
class Person:
    """One posed person on one frame."""

    track_id: int | None
    bbox: np.ndarray  # (4,) float32 xyxy
    det_score: float
    keypoints: np.ndarray  # (17, 3) float32
    kpt_score: float
    detected: bool  # True on frames where the detector found this person


@dataclass
class PoseRequest:
    """The boxes one frame sends to the pose model."""

    track_ids: list[int | None]
    boxes: np.ndarray  # (N, 4) float32
    det_scores: np.ndarray  # (N,)
    detected: bool


def keypoint_extent(keypoints: np.ndarray) -> np.ndarray | None:
    """Bounding box of the confident joints, or None when too few are confident."""
    confident = keypoints[:, 2] > CONFIDENT_JOINT
    if int(confident.sum()) < MIN_CONFIDENT_JOINTS:
        return None
    points = keypoints[confident, :2]
    extent = np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])
    if extent[2] - extent[0] < 2 or extent[3] - extent[1] < 2:
        return None
    return extent


class SourcePersons:
    """Tracker, detection schedule, box calibration and smoother of one source."""

    def __init__(self, det_interval: int = 3, smooth: bool = False,
                 tracker_config: TrackerConfig | None = None,
                 smooth_params: dict | None = None) -> None:
        self.tracker = BoxTracker(tracker_config)
        self.schedule = DetectionSchedule(det_interval)
        self.smoother = KeypointSmoother(**(smooth_params or {})) if smooth else None
        # track id → detector box margins relative to its keypoint extent (see refine_from_pose)
        self._margins: dict[int, np.ndarray] = {}
        self._seen_ids: set[int] = set()

    # -- called by the detect stage -----------------------------------------------------------
    def should_detect(self, frame_index: int) -> bool:
        """The fixed cadence (every k-th frame index); decided from indices alone, so the detect
        stage can run ahead of the tracker without making results depend on thread timing."""
        return self.schedule.should_detect(frame_index)

    @property
    def needs_detection(self) -> bool:
        """The tracker has nothing to pose, lost someone or holds tentative tracks: the pose stage
        runs the detector on the next frame itself."""
        return self.tracker.needs_detection

    # -- called by the pose stage, in frame order ----------------------------------------------
    def plan(self, detections: Detections | None) -> PoseRequest:
        predicted = self.tracker.predict()
        if detections is None:
            return PoseRequest(
                track_ids=[track.track_id for track in predicted],
                boxes=np.array([track.box for track in predicted], np.float32).reshape(-1, 4),
                det_scores=np.array([track.score for track in predicted], np.float32),
                detected=False,
            )
        self.tracker.update(detections.boxes, detections.scores)
        by_row = {track.det_index: track.track_id for track in self.tracker.tracks
                  if track.det_index is not None}
        return PoseRequest(
            track_ids=[by_row.get(row) for row in range(len(detections))],
            boxes=detections.boxes.astype(np.float32).reshape(-1, 4),
            det_scores=detections.scores.astype(np.float32),
            detected=True,
        )

    def finish(self, request: PoseRequest, pose: PoseBatch, pts: float | None) -> list[Person]:
        persons = []
        for slot, track_id in enumerate(request.track_ids):
            keypoints = pose.keypoints[slot]
            if track_id is not None:
                self.refine_from_pose(track_id, request.boxes[slot], keypoints, request.detected)
                if self.smoother is not None and pts is not None:
                    if track_id not in self._seen_ids:
                        self.smoother.reset(track_id)
                    keypoints = self.smoother.smooth(track_id, keypoints, pts)
                self._seen_ids.add(track_id)
            persons.append(Person(track_id, request.boxes[slot], float(request.det_scores[slot]),
                                  keypoints, float(pose.scores[slot]), request.detected))
        self._forget_dead()
        return persons

    def refine_from_pose(self, track_id: int, box: np.ndarray, keypoints: np.ndarray, detected: bool) -> None:
        """Keypoints move the box for the next frame.

        A keypoint extent is not a detector box (heads and feet stick out), so on detector frames
        each track learns its box margins around its keypoint extent; between detections the
        extent plus those margins is fed to the tracker as a soft measurement.
        """
        extent = keypoint_extent(keypoints)
        if extent is None:
            return
        size = np.array([extent[2] - extent[0], extent[3] - extent[1]] * 2)
        if detected:
            self._margins[track_id] = (box.astype(np.float64) - extent) / size
            return
        margins = self._margins.get(track_id)
        if margins is not None:
            self.tracker.refine(track_id, extent + margins * size)

    def _forget_dead(self) -> None:
        alive = {track.track_id for track in self.tracker.tracks}
        if len(self._margins) > len(alive):
            self._margins = {key: value for key, value in self._margins.items() if key in alive}
        if len(self._seen_ids) > 4 * max(len(alive), 16):
            self._seen_ids &= alive
        if self.smoother is not None and len(self.smoother) > len(alive):
            self.smoother.prune(alive)
