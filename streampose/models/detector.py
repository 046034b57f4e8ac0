"""Pedestrian detector: batched preprocessing, one model call per batch, both export styles.

Exports with NMS inside the graph return ``[M,6]`` rows plus per-image counts; raw exports
(``export.nms=False``) return decoded boxes ``[B,N,4]`` and sigmoid scores ``[B,C,N]`` and get NMS
here, with the thresholds written in the model's yml.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streampose.errors import ModelError
from streampose.models.folder import read_model_config
from streampose.models.nms import multiclass_nms
from streampose.models.preprocess import ImageRecord, build_detector_ops, planar_split
from streampose.models.scratch import ThreadScratch
from streampose.runtime import InferenceSession, ModelFiles, RuntimeOptions, create_session

DEFAULT_THRESHOLD = 0.5
# Largest detector batch (images) whose input buffer a thread keeps for reuse (models/scratch.py).
SCRATCH_IMAGES = 8


@dataclass
class Detections:
    """Boxes of one image, in original-image pixels, detector order."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int32

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class Detector:
    """Runs a PaddleDetection/PaddleX detector export on batches of BGR images."""

    def __init__(self, files: ModelFiles, options: RuntimeOptions | None = None,
                 session: InferenceSession | None = None) -> None:
        self.files = files
        self.config = read_model_config(files)
        self.model_name = str((self.config.get("Global") or {}).get("model_name") or files.model_dir.name)
        self.labels = list(self.config.get("label_list") or ["pedestrian"])
        self.ops = build_detector_ops(self.config.get("Preprocess") or [], str(files.config))
        self._planar_ops = planar_split(self.ops)
        self.default_threshold = float(self.config.get("draw_threshold", DEFAULT_THRESHOLD))
        nms = self.config.get("NMS") or {}
        self.nms_score_threshold = float(nms.get("score_threshold", 0.025))
        self.nms_iou_threshold = float(nms.get("nms_threshold", 0.6))
        self.nms_top_k = int(nms.get("nms_top_k", 1000))
        self.nms_keep_top_k = int(nms.get("keep_top_k", 100))
        self.session = session or create_session(files, options or RuntimeOptions())
        self._scratch = ThreadScratch(SCRATCH_IMAGES)
        self.input_names = list(self.session.input_names)
        if "image" not in self.input_names:
            raise ModelError(f"model {files.model_dir}: detector has no input named 'image' ({self.input_names})")
        # Exports with NMS in the graph take the scale factor; raw exports take only the image.
        # A backend may run such a graph only up to its NMS (pre_nms): boxes then come in
        # original-image pixels and the NMS runs here with the graph's own thresholds.
        self.pre_nms = getattr(self.session, "pre_nms", None)
        self.nms_in_graph = "scale_factor" in self.input_names and self.pre_nms is None
        if self.pre_nms is not None:
            self.nms_score_threshold = self.pre_nms.score_threshold
            self.nms_iou_threshold = self.pre_nms.iou_threshold
            self.nms_top_k = -1  # ONNX's NonMaxSuppression has no pre-NMS top-k
            self.nms_keep_top_k = self.pre_nms.keep_top_k
        self.max_batch = int(getattr(self.session, "max_batch", 0) or 0)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, ImageRecord]:
        record = ImageRecord(original_hw=(int(image.shape[0]), int(image.shape[1])))
        for op in self.ops:
            image = op(image, record)
        return image, record

    def predict(self, images: list[np.ndarray], threshold: float | None = None) -> list[Detections]:
        """Detect persons in every image; one model call per batch (see ``max_batch``)."""
        if not images:
            return []
        threshold = self.default_threshold if threshold is None else float(threshold)
        step = self.max_batch or len(images)
        results: list[Detections] = []
        for start in range(0, len(images), step):
            results.extend(self._predict_batch(images[start:start + step], threshold))
        return results

    def _planar_batch(self, images: list[np.ndarray]) -> tuple[np.ndarray, tuple[ImageRecord, ...]] | None:
        """The NCHW batch, normalised straight into its planes, when the yml's ops allow it.

        That is the usual detector yml: fixed-size Resize ops, then NormalizeImage, then only
        Permute. Anything else (keep_ratio sizes, padding after normalising) takes the general path.
        """
        ops = self._planar_ops
        if ops is None:
            return None
        before, normalize = ops
        records, resized = [], []
        for image in images:
            record = ImageRecord(original_hw=(int(image.shape[0]), int(image.shape[1])))
            for op in before:
                image = op(image, record)
            records.append(record)
            resized.append(image)
        height, width = resized[0].shape[:2]
        batch = self._scratch.array("batch", (len(images), 3, height, width), np.float32)
        for slot, (image, record) in enumerate(zip(resized, records)):
            normalize.into_planes(image, record, batch[slot])
        return batch, tuple(records)

    def _predict_batch(self, images: list[np.ndarray], threshold: float) -> list[Detections]:
        planar = self._planar_batch(images)
        if planar is not None:
            batch, records = planar
        else:
            batch, records = self._stacked_batch(images)
        feeds = {"image": batch}
        if "scale_factor" in self.input_names:
            feeds["scale_factor"] = np.array(
                [[record.scale_xy[1], record.scale_xy[0]] for record in records], np.float32)
        if "im_shape" in self.input_names:
            feeds["im_shape"] = np.array([record.resized_hw for record in records], np.float32)
        outputs = self.session.run(feeds)
        if self.nms_in_graph:
            rows_per_image = self._split_nms_rows(outputs, len(images))
        else:
            rows_per_image = self._nms_raw(outputs, records, threshold)
        return [self._filter(rows, record, threshold) for rows, record in zip(rows_per_image, records)]

    def _stacked_batch(self, images: list[np.ndarray]) -> tuple[np.ndarray, tuple[ImageRecord, ...]]:
        """Every op of the yml on each image (HWC float), then one stack and transpose."""
        tensors, records = zip(*(self.preprocess(image) for image in images))
        shapes = {tensor.shape for tensor in tensors}
        if len(shapes) > 1:  # keep_ratio resizes: pad to a common canvas, top-left aligned
            height = max(shape[0] for shape in shapes)
            width = max(shape[1] for shape in shapes)
            padded = []
            for tensor in tensors:
                canvas = np.zeros((height, width, 3), np.float32)
                canvas[: tensor.shape[0], : tensor.shape[1]] = tensor
                padded.append(canvas)
            tensors = tuple(padded)
        batch = np.ascontiguousarray(np.stack(tensors).transpose(0, 3, 1, 2), dtype=np.float32)
        return batch, records

    def _split_nms_rows(self, outputs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
        rows, counts = np.asarray(outputs[0]), np.asarray(outputs[1]).reshape(-1)
        if rows.ndim != 2 or rows.shape[1] != 6 or counts.size != batch_size:
            raise ModelError(f"model {self.files.model_dir}: unexpected NMS outputs {rows.shape}, {counts.shape}")
        split = []
        start = 0
        for count in counts.astype(np.int64):
            split.append(rows[start:start + count])
            start += count
        return split

    def _nms_raw(self, outputs: list[np.ndarray], records: tuple[ImageRecord, ...], threshold: float) -> list[np.ndarray]:
        boxes, scores = (np.asarray(output) for output in outputs[:2])
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.ndim != 3:
            raise ModelError(
                f"model {self.files.model_dir}: raw detector outputs must be boxes [B,N,4] and scores "
                f"[B,C,N], got {boxes.shape} and {scores.shape}")
        # Boxes below the user's threshold are dropped after NMS anyway, and a lower-scored box
        # never suppresses a higher one, so filtering first gives the same boxes, faster.
        score_floor = max(self.nms_score_threshold, threshold)
        rows_per_image = []
        for image_boxes, image_scores, record in zip(boxes, scores, records):
            rows = multiclass_nms(image_boxes, image_scores, score_floor, self.nms_iou_threshold,
                                  self.nms_top_k, self.nms_keep_top_k)
            if self.pre_nms is None:  # raw exports: boxes in resized-input pixels
                resized_h, resized_w = record.resized_hw
                rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, resized_w) / record.scale_xy[0]
                rows[:, [3, 5]] = np.clip(rows[:, [3, 5]], 0, resized_h) / record.scale_xy[1]
            rows_per_image.append(rows)
        return rows_per_image

    @staticmethod
    def _filter(rows: np.ndarray, record: ImageRecord, threshold: float) -> Detections:
        """PaddleX's rule: score strictly above the threshold, real class, clipped, non-empty."""
        rows = np.asarray(rows, dtype=np.float32)
        keep = (rows[:, 1] > threshold) & (rows[:, 0] > -1)
        rows = rows[keep]
        height, width = record.original_hw
        boxes = rows[:, 2:6].copy()
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
        non_empty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(
            boxes=boxes[non_empty].astype(np.float32),
            scores=rows[non_empty, 1].astype(np.float32),
            class_ids=rows[non_empty, 0].astype(np.int32),
        )
