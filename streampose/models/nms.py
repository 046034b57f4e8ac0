"""Hard NMS in numpy for detectors exported without their post-process."""

from __future__ import annotations

import numpy as np


def box_iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many (no +1 pixel convention, as Paddle's normalized NMS)."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
             top_k: int = -1, keep_top_k: int = -1) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first."""
    order = np.argsort(-scores, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if 0 < keep_top_k <= len(keep):
            break
        rest = order[1:]
        if rest.size == 0:
            break
        overlaps = box_iou_one_to_many(boxes[best], boxes[rest])
        order = rest[overlaps <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
                   iou_threshold: float, nms_top_k: int = 1000, keep_top_k: int = 100) -> np.ndarray:
    """Per-class NMS for one image.

    ``boxes`` [N,4], ``scores`` [C,N]. Returns rows ``(class, score, x1, y1, x2, y2)`` sorted by
    score, at most ``keep_top_k`` of them (the same row layout the NMS-in-graph exports emit).
    """
    rows = []
    for class_id in range(scores.shape[0]):
        class_scores = scores[class_id]
        candidates = np.nonzero(class_scores > score_threshold)[0]
        if candidates.size == 0:
            continue
        kept = candidates[hard_nms(boxes[candidates], class_scores[candidates], iou_threshold, nms_top_k)]
        block = np.empty((kept.size, 6), dtype=np.float32)
        block[:, 0] = class_id
        block[:, 1] = class_scores[kept]
        block[:, 2:] = boxes[kept]
        rows.append(block)
    if not rows:
        return np.zeros((0, 6), dtype=np.float32)
    result = np.concatenate(rows)
    result = result[np.argsort(-result[:, 1], kind="stable")]
    return result[:keep_top_k] if keep_top_k > 0 else result
