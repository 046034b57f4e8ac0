"""INT8 post-training quantization: a real NNCF run on real crops, loaded back by OpenVINO.

One quantization of TinyPose (32 person crops from vtest.avi, found by the real detector) goes
through the real CLI into a temporary cache; the tests then check that the IR really is
quantized, that ``precision="int8"`` loads it with the float model's inputs and outputs, that
its keypoints stay near f32's, and the failures a user can meet.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from streampose.cli import main
from streampose.errors import ModelError
from streampose.models.detector import Detector
from streampose.models.keypoints import KeypointModel
from streampose.models.quantize import cached_int8_path, find_int8_model
from streampose.models.registry import load_model_files
from streampose.runtime import RuntimeOptions
from streampose.runtime.openvino_backend import OpenVinoSession

POSE = "PP-TinyPose_128x96"
DETECTOR = "PicoDet-S_pedestrian_320_raw"
CALIBRATION_SAMPLES = 32
PHOTOS = ("basketball1.png", "basketball2.png", "messi5.jpg")


def _options(precision: str) -> RuntimeOptions:
    return RuntimeOptions(backend="openvino", precision=precision)


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory, model_home, samples_dir):
    """A cache holding TinyPose's INT8 copy, made by ``streampose models quantize``."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMPOSE_CACHE_HOME", str(cache))
        code = main(["models", "quantize", "--model", POSE, "--video", str(samples_dir / "vtest.avi"),
                     "--samples", str(CALIBRATION_SAMPLES)])
        assert code == 0
        yield cache


@pytest.fixture
def in_cache(int8_cache, monkeypatch):
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(int8_cache))
    return int8_cache


@pytest.fixture(scope="module")
def pose_files(model_home):
    return load_model_files(POSE, None)


def test_the_int8_ir_is_in_the_content_keyed_cache_and_really_quantized(in_cache, pose_files) -> None:
    import openvino as ov

    path = find_int8_model(pose_files, pose_files.openvino_xml)
    assert path is not None and path == cached_int8_path(pose_files, pose_files.openvino_xml)
    assert path.parent.parent == in_cache / "int8" and path.parent.name.startswith(f"{POSE}-")
    model = ov.Core().read_model(str(path))
    ops = model.get_ordered_ops()
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in ops)
    int8_weights = sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ops)
    convolutions = sum(op.get_type_name() in ("Convolution", "GroupConvolution") for op in ops)
    # Activations before (nearly) every convolution, and the weights themselves stored in int8.
    assert fake_quantize >= convolutions // 2 > 50
    assert int8_weights >= convolutions // 2
    assert model.inputs[0].get_partial_shape()[0].is_dynamic  # takes any batch, like the float model


@pytest.fixture(scope="module")
def photos_and_boxes(model_home, samples_dir):
    """The sample photos and the persons the f32 detector finds in them."""
    from streampose.inputs import read_image

    detector = Detector(load_model_files(DETECTOR, None), _options("f32"))
    images = [read_image(samples_dir / name) for name in PHOTOS]
    boxes = [found.boxes for found in detector.predict(images, 0.5)]
    assert sum(len(b) for b in boxes) >= 4
    return images, boxes


def test_int8_keypoints_stay_close_to_f32(in_cache, pose_files, photos_and_boxes) -> None:
    """Same persons, joints within a few percent of the person's size, yet really other numbers.

    Measured with this 32-crop calibration: joints move by a median 1.1% of the box diagonal
    (mean 3.4%: a few occluded joints jump to another peak). A quantization that broke the graph
    (wrong ranges, lost output mapping) moves joints by tens of percent, and a silent fallback
    to the float model would move nothing.
    """
    images, boxes = photos_and_boxes
    f32 = KeypointModel(pose_files, _options("f32"))
    int8 = KeypointModel(pose_files, _options("int8"))
    assert int8.session.precision.startswith("int8")
    f32_poses = f32.predict_many(images, boxes)
    int8_poses = int8.predict_many(images, boxes)
    relative_shifts = []
    for image_boxes, ours, reference in zip(boxes, int8_poses, f32_poses):
        assert ours.keypoints.shape == reference.keypoints.shape
        diagonals = np.hypot(image_boxes[:, 2] - image_boxes[:, 0], image_boxes[:, 3] - image_boxes[:, 1])
        shift = np.linalg.norm(ours.keypoints[..., :2] - reference.keypoints[..., :2], axis=2)
        relative_shifts.append(shift / diagonals[:, None])
        # Person scores (mean joint peak) moved by up to 0.10 on AVX-512 CPUs and 0.17 on an AMD EPYC
        # with AVX2 only, whose int8 kernels have no VNNI; a broken graph gives unrelated scores.
        np.testing.assert_allclose(ours.scores, reference.scores, atol=0.25)
    shifts = np.concatenate(relative_shifts)
    assert float(np.median(shifts)) < 0.025, f"median joint shift {np.median(shifts):.3f} of the box diagonal"
    assert float(np.mean(shifts)) < 0.07, f"mean joint shift {np.mean(shifts):.3f} of the box diagonal"
    assert float(np.max(np.abs(int8_poses[0].scores - f32_poses[0].scores))) > 1e-4  # really int8


def test_int8_session_serves_any_batch_with_the_float_models_outputs(in_cache, pose_files) -> None:
    f32 = OpenVinoSession(pose_files, _options("f32"))
    int8 = OpenVinoSession(pose_files, _options("int8"))
    assert int8.input_names == f32.input_names
    crops = np.random.default_rng(0).standard_normal((3, 3, 128, 96)).astype(np.float32)
    ours = int8.run({"image": crops})
    reference = f32.run({"image": crops})
    assert [o.shape for o in ours] == [r.shape for r in reference] == [(3, 17, 32, 24), (3, 17)]
    assert [o.dtype.kind for o in ours] == [r.dtype.kind for r in reference]


def test_a_missing_int8_model_is_one_line_that_says_what_to_run(tmp_path, monkeypatch, pose_files) -> None:
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path))
    with pytest.raises(ModelError) as caught:
        OpenVinoSession(pose_files, _options("int8"))
    message = str(caught.value)
    assert "\n" not in message
    assert POSE in message and "streampose models quantize" in message


def test_changed_weights_do_not_pick_up_a_stale_int8_copy(in_cache, pose_files, tmp_path) -> None:
    """The cache key is the float model's content, so replaced weights need a new quantization."""
    from streampose.models.folder import find_model_files

    copy = tmp_path / POSE
    shutil.copytree(pose_files.model_dir, copy)
    files = find_model_files(copy)
    assert find_int8_model(files, files.openvino_xml) is not None  # same content: same key
    weights = files.openvino_xml.with_suffix(".bin")
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert find_int8_model(files, files.openvino_xml) is None


def test_a_pipeline_config_can_ask_for_int8_pose(in_cache, model_home) -> None:
    from streampose.config import STREAM_PRESET, load_pipeline_config
    from streampose.pipeline import create_pipeline

    config = load_pipeline_config(STREAM_PRESET, None)
    config["SubModules"]["KeypointDetection"]["precision"] = "int8"
    config["SubModules"]["ObjectDetection"]["precision"] = "f32"
    pipeline = create_pipeline(config=config, backend="openvino")
    assert pipeline.keypoint_model.session.precision.startswith("int8")
    assert pipeline.detector.session.precision == "f32"


def test_the_cli_names_the_missing_calibration_video(tmp_path, capsys) -> None:
    code = main(["models", "quantize", "--model", POSE, "--video", str(tmp_path / "missing.avi")])
    assert code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "missing.avi" in error[0]
