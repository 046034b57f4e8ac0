"""COCO-17 body layout shared by the pose decoder, the tracker's smoother and the renderer.

The keypoint order, limb order and palette are PaddleX's (compat doc §2.1 and §7). They live in
one place because three things must agree on them: the flip test swaps left/right joints by index,
the JSON a user reads lists joints in this order, and the PaddleX-identical picture depends on the
limb order (limbs are blended one after another, so a different order gives different pixels).
"""

from __future__ import annotations

from typing import Final

NUM_KEYPOINTS: Final = 17

COCO_KEYPOINT_NAMES: Final[tuple[str, ...]] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Limbs as (joint, joint) in PaddleX's drawing order; the i-th limb takes PADDLEX_PALETTE[i].
COCO_SKELETON: Final[tuple[tuple[int, int], ...]] = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 13),
    (12, 14),
    (13, 15),
    (14, 16),
    (11, 12),
)

# Left/right joint pairs: a horizontally flipped image swaps each pair.
FLIP_PAIRS: Final[tuple[tuple[int, int], ...]] = (
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
)

# PaddleX writes these tuples as-is into the BGR canvas, so (255, 0, 0) shows as blue.
PADDLEX_PALETTE: Final[tuple[tuple[int, int, int], ...]] = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)
