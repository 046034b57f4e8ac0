"""Pedestrian detector: both export styles, batching, PaddleX's filtering rules, model folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from streampose.errors import ModelError
from streampose.inputs import read_image
from streampose.models.detector import Detector
from streampose.models.folder import find_model_files
from streampose.models.registry import load_model_files
from streampose.runtime import RuntimeOptions

PADDLE = RuntimeOptions(backend="paddle")
MODEL_FILES = ("inference.json", "inference.pdiparams", "inference.yml")


@pytest.fixture(scope="module")
def images(samples_dir: Path, data_dir: Path) -> list[np.ndarray]:
    """Four real images with 1 to several persons, different sizes."""
    paths = [samples_dir / "messi5.jpg", samples_dir / "basketball1.png", samples_dir / "basketball2.png",
             data_dir / "coco_mini" / "000000196141.jpg"]
    return [read_image(path) for path in paths]


@pytest.fixture(scope="module")
def nms_detector(paddle_pipeline) -> Detector:
    detector = paddle_pipeline.detector
    assert detector.nms_in_graph and detector.model_name == "PicoDet-S_pedestrian_320"
    return detector


@pytest.fixture(scope="module")
def raw_detector(model_home: Path) -> Detector:
    detector = Detector(load_model_files("PicoDet-S_pedestrian_320_raw", None), PADDLE)
    assert not detector.nms_in_graph
    return detector


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_raw_export_with_numpy_nms_equals_nms_in_graph(nms_detector, raw_detector, images, threshold) -> None:
    in_graph = [nms_detector.predict([image], threshold)[0] for image in images]
    in_numpy = [raw_detector.predict([image], threshold)[0] for image in images]
    assert sum(len(found) for found in in_graph) >= 6
    for graph, numpy_nms in zip(in_graph, in_numpy):
        assert len(graph) == len(numpy_nms)
        np.testing.assert_allclose(numpy_nms.boxes, graph.boxes, atol=0.01)
        np.testing.assert_allclose(numpy_nms.scores, graph.scores, atol=1e-5)
        assert (graph.scores > threshold).all()


@pytest.mark.parametrize("which", ["nms", "raw"])
def test_four_images_in_one_call_equal_one_by_one(nms_detector, raw_detector, images, which) -> None:
    detector = nms_detector if which == "nms" else raw_detector
    batched = detector.predict(images, 0.5)
    assert len(batched) == 4
    for image, together in zip(images, batched):
        alone = detector.predict([image], 0.5)[0]
        assert len(alone) == len(together)
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-5)


def test_inputs_normalised_into_planes_equal_the_yml_ops_step_by_step(raw_detector, images) -> None:
    """The fast path (resize, then normalise straight into NCHW planes) must give the very
    tensor of applying the yml's ops one by one and transposing after."""
    assert raw_detector._planar_ops is not None  # the usual Resize → NormalizeImage → Permute yml
    planar, planar_records = raw_detector._planar_batch(images)
    stacked, stacked_records = raw_detector._stacked_batch(images)
    assert planar.shape == stacked.shape == (4, 3, 320, 320) and planar.flags.c_contiguous
    np.testing.assert_array_equal(planar, stacked)
    assert [r.scale_xy for r in planar_records] == [r.scale_xy for r in stacked_records]


def test_ymls_that_pad_or_keep_ratio_take_the_general_path() -> None:
    from streampose.models.preprocess import build_detector_ops, planar_split  # noqa: PLC0415

    normalise = {"type": "NormalizeImage", "mean": [0.5] * 3, "std": [0.5] * 3, "is_scale": True}
    plain = [{"type": "Resize", "target_size": [320, 320], "keep_ratio": False}, normalise, {"type": "Permute"}]
    assert planar_split(build_detector_ops(plain, "test.yml")) is not None
    keep_ratio = [{"type": "Resize", "target_size": [640, 640], "keep_ratio": True}, normalise, {"type": "Permute"}]
    assert planar_split(build_detector_ops(keep_ratio, "test.yml")) is None
    padded = [*plain[:2], {"type": "PadStride", "stride": 32}, {"type": "Permute"}]
    assert planar_split(build_detector_ops(padded, "test.yml")) is None


def test_threshold_is_strictly_greater_on_real_scores(nms_detector, images) -> None:
    everything = nms_detector.predict([images[1]], 0.3)[0]
    score = everything.scores[-1]  # the weakest box above 0.3
    at_score = nms_detector.predict([images[1]], float(score))[0]
    below_score = nms_detector.predict([images[1]], float(np.nextafter(score, np.float32(0))))[0]
    assert len(at_score) == len(everything) - 1
    assert len(below_score) == len(everything)


class CannedRowsSession:
    """Stands in for an NMS-in-graph runtime to test the post-processing on crafted rows."""

    backend_name = "canned"
    input_names = ["scale_factor", "image"]

    def __init__(self, rows_per_image: list[list[list[float]]]) -> None:
        self.rows_per_image = rows_per_image
        self.feeds: dict[str, np.ndarray] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds = feeds
        rows = [row for image_rows in self.rows_per_image for row in image_rows]
        counts = [len(image_rows) for image_rows in self.rows_per_image]
        return [np.asarray(rows, np.float32).reshape(-1, 6), np.asarray(counts, np.int32)]


@pytest.fixture(scope="module")
def detector_files(model_home: Path):
    return load_model_files("PicoDet-S_pedestrian_320", None)


def test_post_processing_filters_clips_and_drops_empty_boxes(detector_files) -> None:
    height, width = 100, 200
    rows = [
        [0, 0.90, 10, 10, 50, 80],  # kept as is
        [0, 0.50, 10, 10, 50, 80],  # score == threshold: dropped (strict >)
        [-1, 0.95, 10, 10, 50, 80],  # placeholder class: dropped
        [0, 0.80, -20, -5, 230, 120],  # clipped to the image
        [0, 0.70, 250, 10, 300, 50],  # entirely right of the image: empty after clipping
        [0, 0.60, 40, 30, 40, 60],  # zero width: dropped
        [0, 0.55, 150, 20, 190, 90],  # kept, after a dropped one: order is preserved
    ]
    session = CannedRowsSession([rows])
    detector = Detector(detector_files, session=session)
    found = detector.predict([np.zeros((height, width, 3), np.uint8)], 0.5)[0]
    np.testing.assert_allclose(found.boxes, [[10, 10, 50, 80], [0, 0, 200, 100], [150, 20, 190, 90]])
    np.testing.assert_allclose(found.scores, [0.90, 0.80, 0.55])
    np.testing.assert_array_equal(found.class_ids, [0, 0, 0])
    # The graph gets (resized_h / h, resized_w / w) per image, PaddleX's scale_factor order.
    np.testing.assert_allclose(session.feeds["scale_factor"], [[320 / height, 320 / width]])
    assert session.feeds["image"].shape == (1, 3, 320, 320)


def test_rows_are_split_per_image_by_the_counts(detector_files) -> None:
    session = CannedRowsSession([[[0, 0.9, 1, 1, 5, 5]], [], [[0, 0.8, 2, 2, 6, 6], [0, 0.7, 3, 3, 7, 7]]])
    detector = Detector(detector_files, session=session)
    found = detector.predict([np.zeros((10, 10, 3), np.uint8)] * 3, 0.5)
    assert [len(item) for item in found] == [1, 0, 2]
    np.testing.assert_allclose(found[2].scores, [0.8, 0.7])


def copy_model(source: Path, target: Path, names: dict[str, str] | None = None) -> Path:
    """A copy of a real model folder, optionally with files renamed (old name → new name)."""
    target.mkdir(parents=True)
    names = names or {name: name for name in MODEL_FILES}
    for old, new in names.items():
        shutil.copyfile(source / old, target / new)
    return target


def test_unknown_preprocess_op_is_a_model_error_naming_it(model_home: Path, tmp_path: Path) -> None:
    folder = copy_model(model_home / "PicoDet-S_pedestrian_320", tmp_path / "model")
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Preprocess"].insert(1, {"type": "RandomDistort", "brightness": 0.2})
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelError, match="RandomDistort") as caught:
        Detector(find_model_files(folder), PADDLE)
    assert "\n" not in str(caught.value) and "inference.yml" in str(caught.value)


def test_folder_without_params_is_a_model_error(model_home: Path, tmp_path: Path) -> None:
    folder = copy_model(model_home / "PicoDet-S_pedestrian_320", tmp_path / "model",
                        {"inference.json": "inference.json", "inference.yml": "inference.yml"})
    with pytest.raises(ModelError, match="inference.pdiparams") as caught:
        find_model_files(folder)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)


def test_classic_paddledetection_export_loads_and_detects_the_same(model_home, tmp_path, nms_detector, images) -> None:
    """tools/export_model.py layout: <config_name>/model.json, model.pdiparams, infer_cfg.yml (no Global)."""
    source = model_home / "PicoDet-S_pedestrian_320"
    folder = copy_model(source, tmp_path / "export" / "picodet_s_320_lcnet_pedestrian",
                        {"inference.json": "model.json", "inference.pdiparams": "model.pdiparams"})
    config = yaml.safe_load((source / "inference.yml").read_text())
    config.pop("Global")
    (folder / "infer_cfg.yml").write_text(yaml.safe_dump(config))
    files = find_model_files(tmp_path / "export")  # the export's parent: one sub-folder down
    assert files.graph.name == "model.json" and files.config.name == "infer_cfg.yml"
    classic = Detector(files, PADDLE)
    assert classic.model_name == "picodet_s_320_lcnet_pedestrian"
    for image in images:
        expected = nms_detector.predict([image], 0.5)[0].boxes
        np.testing.assert_array_equal(classic.predict([image], 0.5)[0].boxes, expected)


def test_192_detector_finds_the_same_persons(model_home, nms_detector, images) -> None:
    small = Detector(load_model_files("PicoDet-S_pedestrian_192", None), PADDLE)
    for image in images[:3]:
        big_boxes = nms_detector.predict([image], 0.5)[0].boxes
        small_boxes = small.predict([image], 0.5)[0].boxes
        assert len(small_boxes) == len(big_boxes)
        for box in small_boxes:
            assert max(iou(box, other) for other in big_boxes) > 0.7


def iou(first: np.ndarray, second: np.ndarray) -> float:
    width = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    inter = width * height
    area = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return float(inter / (area - inter))
