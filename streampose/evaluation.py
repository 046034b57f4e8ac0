"""OKS AP of keypoint results on a COCO ground-truth file, the way the PaddleX figures were made.

The reference figures in ``../shared/data/README.md`` score each person with
``det_score × kpt_score`` and feed the 17 joints to pycocotools' ``COCOeval(..., "keypoints")``.
This module does exactly that for any source of results (streampose objects, PaddleX JSON files,
plain dicts), so the accuracy tests and ``streampose bench-precision`` compare settings on the
same footing. pycocotools is an optional dependency (``pip install "streampose[eval]"``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streampose.errors import ConfigError

PERSON_CATEGORY_ID = 1
# The shared evaluation sets (``../shared/data/README.md``): folder → annotation file.
EVAL_SETS = {"coco_mini": "test_coco.json", "coco_train80": "annotations.json"}
# PaddleX's reference figures were made with the detector at this threshold.
REFERENCE_THRESHOLD = 0.5


@dataclass(frozen=True)
class KeypointScores:
    """The three COCO keypoint figures the project reports (``stats[0]``, ``stats[1]``, ``stats[5]``)."""

    ap: float
    ap50: float
    ar: float

    def row(self) -> str:
        return f"{self.ap:6.3f} {self.ap50:6.3f} {self.ar:6.3f}"


@dataclass(frozen=True)
class GroundTruth:
    """A COCO keypoint annotation file and the image ids keyed by file name."""

    annotation_file: Path
    image_ids: dict[str, int]  # file name → COCO image id
    image_dir: Path

    @classmethod
    def load(cls, annotation_file: str | Path, image_dir: str | Path | None = None) -> GroundTruth:
        path = Path(annotation_file)
        data = json.loads(path.read_text(encoding="utf-8"))
        ids = {image["file_name"]: int(image["id"]) for image in data["images"]}
        return cls(path, ids, Path(image_dir) if image_dir is not None else path.parent)

    def image_paths(self) -> list[Path]:
        """Every image of the set, sorted by file name (a stable order for batching)."""
        return [self.image_dir / name for name in sorted(self.image_ids)]


def person_records(image_id: int, boxes: Iterable[Mapping[str, Any]]) -> list[dict]:
    """COCO result records for one image's persons (PaddleX result ``boxes`` entries).

    The visibility slot of each joint carries the joint score; COCOeval ignores it for results.
    """
    records = []
    for box in boxes:
        keypoints = np.asarray(box["keypoints"], dtype=np.float64).reshape(-1, 3)
        records.append({
            "image_id": int(image_id),
            "category_id": PERSON_CATEGORY_ID,
            "keypoints": keypoints.reshape(-1).tolist(),
            "score": float(box["det_score"]) * float(box["kpt_score"]),
        })
    return records


def records_from_results(ground_truth: GroundTruth, results: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[dict]:
    """Records for ``{file name: boxes}``; every file name must belong to the set."""
    records: list[dict] = []
    for file_name, boxes in results.items():
        records.extend(person_records(ground_truth.image_ids[Path(file_name).name], boxes))
    return records


def records_from_paddlex_dir(ground_truth: GroundTruth, folder: str | Path) -> list[dict]:
    """Records from a folder of PaddleX ``<stem>_res.json`` files (one per image of the set)."""
    results = {}
    for name in ground_truth.image_ids:
        data = json.loads((Path(folder) / f"{Path(name).stem}_res.json").read_text(encoding="utf-8"))
        results[name] = data["boxes"]
    return records_from_results(ground_truth, results)


def evaluate(ground_truth: GroundTruth, records: list[dict]) -> KeypointScores:
    """OKS AP / AP50 / AR over all images of the set (images without results count as misses)."""
    # pycocotools prints progress on stdout; tests and benchmarks print their own tables.
    try:
        from pycocotools.coco import COCO  # noqa: PLC0415 - optional: the eval extra
        from pycocotools.cocoeval import COCOeval  # noqa: PLC0415
    except ImportError:
        raise ConfigError('OKS AP needs pycocotools: pip install "streampose[eval]"') from None

    if not records:  # loadRes rejects an empty list; no detections means nothing was found
        return KeypointScores(0.0, 0.0, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ground_truth.annotation_file))
        coco_dt = coco_gt.loadRes(records)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.imgIds = sorted(ground_truth.image_ids.values())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return KeypointScores(ap=float(stats[0]), ap50=float(stats[1]), ar=float(stats[5]))


@dataclass
class EvalSet:
    """One COCO set with the detector's persons on each image: found once, posed by every setting."""

    ground_truth: GroundTruth
    names: list[str]
    images: list[np.ndarray]
    boxes: list[np.ndarray]
    det_scores: list[np.ndarray]

    @property
    def persons(self) -> int:
        return sum(len(boxes) for boxes in self.boxes)

    @classmethod
    def detect(cls, annotation_file: Path, detector, threshold: float = REFERENCE_THRESHOLD) -> EvalSet:
        """Every image of the set through ``detector``, one image per call as PaddleX ran them.

        Batched oneDNN convolutions differ in the last bits, and on a small person a 1e-3 px box
        change becomes a 0.1 px joint change.
        """
        from streampose.inputs import read_image  # noqa: PLC0415

        ground_truth = GroundTruth.load(annotation_file)
        paths = ground_truth.image_paths()
        images = [read_image(path) for path in paths]
        found = [detector.predict([image], threshold)[0] for image in images]
        return cls(ground_truth, [path.name for path in paths], images,
                   [item.boxes for item in found], [item.scores for item in found])

    def results(self, poses) -> dict[str, list[dict]]:
        """Per file name, each person as PaddleX saves it (box, det score, joints, kpt score)."""
        return {
            name: [{"coordinate": box.tolist(), "det_score": float(det_score),
                    "keypoints": pose.keypoints[index], "kpt_score": float(pose.scores[index])}
                   for index, (box, det_score) in enumerate(zip(boxes, det_scores))]
            for name, boxes, det_scores, pose in zip(self.names, self.boxes, self.det_scores, poses)
        }

    def score(self, keypoint_model) -> KeypointScores:
        """OKS AP of ``keypoint_model`` on the set's detected persons."""
        results = self.results(keypoint_model.predict_many(self.images, self.boxes))
        return evaluate(self.ground_truth, records_from_results(self.ground_truth, results))
