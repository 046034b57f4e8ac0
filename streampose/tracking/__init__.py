"""Per-source temporal state: who is who across frames, and steadier keypoints.

``BoxTracker`` keeps person ids and Kalman boxes (so the detector can skip frames),
``DetectionSchedule`` decides which frames run the detector, and ``KeypointSmoother`` removes
keypoint jitter. Keep one of each per source; all are plain Python objects and pickle.
"""

from streampose.tracking.kalman import BoxKalman, KalmanNoise
from streampose.tracking.schedule import DetectionSchedule
from streampose.tracking.smoothing import KeypointSmoother, OneEuroFilter
from streampose.tracking.tracker import BoxTracker, Track, TrackerConfig, associate, iou_matrix

__all__ = [
    "BoxKalman",
    "BoxTracker",
    "DetectionSchedule",
    "KalmanNoise",
    "KeypointSmoother",
    "OneEuroFilter",
    "Track",
    "TrackerConfig",
    "associate",
    "iou_matrix",
]
