"""Parity with the real PaddleX 3.7.2 pipeline, against its own saved outputs.

``../shared/data/paddlex_reference`` holds what PaddleX returned on the sample images, the
coco_mini images and every frame of vtest.avi, with flip and UDP variants. The same models and
options must give the same persons and keypoints up to float noise; the issue's acceptance metric
(mean keypoint distance at most 2 % of the box diagonal) is checked as well, separately, so a
regression shows which of the two it breaks.

Float noise depends on the CPU. The reference files come from an AVX-512 machine; on an AMD EPYC
with AVX2 only, PaddleX 3.7.2 itself (run there on the same files) differs from them by up to
0.72 px on one joint (UDP, samples) and 1.2e-3 in a joint score (coco_mini), and with UDP 14 of
coco_mini's 204 joint scores move by more than 1e-4: oneDNN sums in another order, and UDP's
DARK step amplifies it. streampose on that CPU is within the same bounds. So nearly every joint
must agree to the tight tolerance, and none may be far off: a real bug (a shifted crop, another
normalisation, swapped joints) moves most joints, or one by pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from streampose import create_pipeline
from streampose.config import load_pipeline_config
from streampose.models.keypoints import KeypointModel

SAMPLE_IMAGES = ("messi5.jpg", "basketball1.png", "basketball2.png")
BOX_TOL_PX = 0.01
KEYPOINT_TOL_PX = 0.05
SCORE_TOL = 1e-4
# Cross-CPU float noise (module docstring), measured on the AVX2-only EPYC: joints beyond
# KEYPOINT_TOL_PX at most 2 of the samples' 85 (2.4 %), 0.72 px at worst; joint scores beyond
# SCORE_TOL 7 of 85 (8.2 %) and 14 of coco_mini's 204 (6.9 %), 1.8e-3 at worst; kpt_score 1.9e-4.
MAX_SHARE_BEYOND_KEYPOINT_TOL = 0.05
KEYPOINT_BOUND_PX = 1.0
MAX_SHARE_BEYOND_SCORE_TOL = 0.15
JOINT_SCORE_BOUND = 5e-3
KPT_SCORE_TOL = 5e-4
TARGET_RELATIVE_DISTANCE = 0.02  # the issue's metric: mean joint distance / box diagonal
VTEST_STEP = 20  # every 20th frame: 40 frames spread over the whole video


@dataclass(frozen=True)
class Variant:
    model_name: str
    flip: bool = False
    use_udp: bool | None = None


VARIANTS = {
    "base_128x96": Variant("PP-TinyPose_128x96"),
    "base_256x192": Variant("PP-TinyPose_256x192"),
    "flip_128x96": Variant("PP-TinyPose_128x96", flip=True),
    "flip_256x192": Variant("PP-TinyPose_256x192", flip=True),
    "udp_128x96": Variant("PP-TinyPose_128x96", use_udp=True),
    "udp_256x192": Variant("PP-TinyPose_256x192", use_udp=True),
}


def build_pipeline(variant: Variant):
    """The variant as a PaddleX user would write it: the packaged YAML with flip/use_udp set."""
    config = load_pipeline_config("human_keypoint_detection", None)
    config["SubModules"]["KeypointDetection"].update(
        model_name=variant.model_name, flip=variant.flip, use_udp=variant.use_udp)
    pipeline = create_pipeline(config=config, backend="paddle")
    if variant.use_udp:
        # PaddleX maps UDP heatmaps back with the non-UDP inverse; the reference was made that way.
        model = pipeline.keypoint_model
        pipeline.keypoint_model = KeypointModel(model.files, session=model.session, use_udp=True,
                                                exact_udp_inverse=False)
    return pipeline


@pytest.fixture(scope="module")
def pipelines(paddle_pipeline):
    """Pipelines per variant, built on first use (each one loads two models)."""
    built = {"base_128x96": paddle_pipeline}

    def get(name: str):
        if name not in built:
            built[name] = build_pipeline(VARIANTS[name])
        return built[name]

    return get


@pytest.fixture(scope="module")
def predictions(pipelines, samples_dir: Path, data_dir: Path):
    """``{file name: result}`` per (variant, image set), computed once and shared by the tests."""
    cache: dict[tuple[str, str], dict] = {}
    folders = {"samples": [samples_dir / name for name in SAMPLE_IMAGES],
               "coco_mini": sorted((data_dir / "coco_mini").glob("*.jpg"))}

    def get(variant: str, image_set: str) -> dict:
        key = (variant, image_set)
        if key not in cache:
            paths = folders[image_set]
            results = list(pipelines(variant).predict([str(path) for path in paths]))
            cache[key] = {Path(result["input_path"]).name: result for result in results}
        return cache[key]

    return get


def load_reference(reference_dir: Path, image_set: str, variant: str, file_name: str) -> dict:
    path = reference_dir / image_set / variant / f"{Path(file_name).stem}_res.json"
    return json.loads(path.read_text(encoding="utf-8"))


def box_diagonal(box) -> float:
    x1, y1, x2, y2 = (float(value) for value in box)
    return float(np.hypot(x2 - x1, y2 - y1))


def relative_distance(reference_keypoints, keypoints, box) -> float:
    """Mean joint distance divided by the box diagonal (the issue's acceptance metric)."""
    distances = np.linalg.norm(np.asarray(reference_keypoints, np.float64)[:, :2]
                               - np.asarray(keypoints, np.float64)[:, :2], axis=1)
    return float(distances.mean() / box_diagonal(box))


@dataclass
class Differences:
    """Worst differences over a set of persons (for assertions and for the report)."""

    box: float = 0.0
    det_score: float = 0.0
    keypoint: float = 0.0
    joint_score: float = 0.0
    kpt_score: float = 0.0
    relative: float = 0.0
    joints: int = 0
    joints_beyond_keypoint_tol: int = 0
    joints_beyond_score_tol: int = 0

    def add(self, ref_box, ref_det, ref_kpts, ref_kpt_score, box, det, kpts, kpt_score) -> None:
        ref_kpts = np.asarray(ref_kpts, np.float64)
        kpts = np.asarray(kpts, np.float64)
        joint_distances = np.abs(ref_kpts[:, :2] - kpts[:, :2]).max(axis=1)
        joint_scores = np.abs(ref_kpts[:, 2] - kpts[:, 2])
        self.box = max(self.box, float(np.abs(np.asarray(ref_box, np.float64) - np.asarray(box, np.float64)).max()))
        self.det_score = max(self.det_score, abs(float(ref_det) - float(det)))
        self.keypoint = max(self.keypoint, float(joint_distances.max()))
        self.joint_score = max(self.joint_score, float(joint_scores.max()))
        self.kpt_score = max(self.kpt_score, abs(float(ref_kpt_score) - float(kpt_score)))
        self.relative = max(self.relative, relative_distance(ref_kpts, kpts, ref_box))
        self.joints += len(joint_distances)
        self.joints_beyond_keypoint_tol += int((joint_distances > KEYPOINT_TOL_PX).sum())
        self.joints_beyond_score_tol += int((joint_scores > SCORE_TOL).sum())


def compare_image(reference: dict, result: dict, differences: Differences, label: str) -> None:
    ref_boxes, boxes = reference["boxes"], result["boxes"]
    assert len(boxes) == len(ref_boxes), f"{label}: {len(boxes)} persons, PaddleX found {len(ref_boxes)}"
    for ref, got in zip(ref_boxes, boxes):
        differences.add(ref["coordinate"], ref["det_score"], ref["keypoints"], ref["kpt_score"],
                        got["coordinate"], got["det_score"], got["keypoints"], got["kpt_score"])


def compare_set(predictions, reference_dir: Path, variant: str, image_set: str) -> Differences:
    differences = Differences()
    results = predictions(variant, image_set)
    for file_name, result in results.items():
        reference = load_reference(reference_dir, image_set, variant, file_name)
        assert reference["input_path"] == file_name
        compare_image(reference, result, differences, f"{variant}/{image_set}/{file_name}")
    return differences


PARAMS = [(variant, image_set) for image_set in ("samples", "coco_mini") for variant in VARIANTS]


@pytest.mark.parametrize(("variant", "image_set"), PARAMS)
def test_same_persons_and_keypoints_as_paddlex(predictions, reference_dir, variant, image_set) -> None:
    found = compare_set(predictions, reference_dir, variant, image_set)
    assert found.box <= BOX_TOL_PX, f"boxes differ by {found.box:.4g} px"
    assert found.det_score <= SCORE_TOL, f"det scores differ by {found.det_score:.3g}"
    assert found.joints_beyond_keypoint_tol <= MAX_SHARE_BEYOND_KEYPOINT_TOL * found.joints, (
        f"{found.joints_beyond_keypoint_tol} of {found.joints} joints differ by more than {KEYPOINT_TOL_PX} px")
    assert found.keypoint <= KEYPOINT_BOUND_PX, f"keypoints differ by {found.keypoint:.4g} px"
    assert found.joints_beyond_score_tol <= MAX_SHARE_BEYOND_SCORE_TOL * found.joints, (
        f"{found.joints_beyond_score_tol} of {found.joints} joint scores differ by more than {SCORE_TOL:g}")
    assert found.joint_score <= JOINT_SCORE_BOUND, f"joint scores differ by {found.joint_score:.3g}"
    assert found.kpt_score <= KPT_SCORE_TOL, f"kpt_score differs by {found.kpt_score:.3g}"


@pytest.mark.parametrize(("variant", "image_set"), PARAMS)
def test_issue_metric_mean_keypoint_distance_within_two_percent_of_box(
        predictions, reference_dir, variant, image_set) -> None:
    found = compare_set(predictions, reference_dir, variant, image_set)
    assert found.relative <= TARGET_RELATIVE_DISTANCE


def test_variant_settings_reach_the_keypoint_model(pipelines) -> None:
    """flip/use_udp from the config dict, and UDP's exact inverse as streampose's default."""
    flip = pipelines("flip_128x96").keypoint_model
    assert flip.flip and not flip.use_udp
    config = load_pipeline_config("human_keypoint_detection", None)
    config["SubModules"]["KeypointDetection"]["use_udp"] = True
    udp_default = create_pipeline(config=config, backend="paddle").keypoint_model
    assert udp_default.use_udp and udp_default.exact_udp_inverse and not udp_default.flip
    assert pipelines("base_256x192").keypoint_model.input_wh == (192, 256)


# -- vtest.avi: every frame was run by PaddleX -----------------------------------------------------

@pytest.fixture(scope="module")
def vtest(samples_dir: Path, reference_dir: Path, paddle_pipeline):
    """40 frames spread over the video (decoded with PyAV), PaddleX's frames, and our results."""
    reference = json.loads((reference_dir / "vtest.avi.json").read_text(encoding="utf-8"))
    wanted = set(range(0, len(reference["frames"]), VTEST_STEP))
    frames: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(str(samples_dir / "vtest.avi")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            decoded += 1
            if index in wanted:
                frames[index] = frame.to_ndarray(format="bgr24")
    indices = sorted(frames)
    results = list(paddle_pipeline.predict([frames[index] for index in indices]))
    return {"reference": reference, "decoded": decoded, "frames": frames,
            "results": dict(zip(indices, results))}


def test_vtest_decodes_as_many_frames_as_paddlex_saw(vtest) -> None:
    assert vtest["decoded"] == len(vtest["reference"]["frames"]) == 795
    assert [frame["index"] for frame in vtest["reference"]["frames"]] == list(range(795))
    assert len(vtest["frames"]) == 40


def test_vtest_same_persons_per_frame(vtest) -> None:
    counts = {index: (len(result["boxes"]), len(vtest["reference"]["frames"][index]["persons"]))
              for index, result in vtest["results"].items()}
    assert sum(reference for _, reference in counts.values()) > 100  # a crowded scene, not a vacuous check
    assert {index: pair for index, pair in counts.items() if pair[0] != pair[1]} == {}


def test_vtest_poses_from_paddlex_boxes_match(vtest, paddle_pipeline) -> None:
    """Given PaddleX's own boxes, the keypoint stage alone must match to float noise.

    vtest's persons are small, so their crops are upsampled: OpenCV's warpAffine rounds sample
    positions to 1/32 px, and a crop matrix that differs from PaddleX's in the last float32 bits
    moves joints by a tenth of a pixel. This isolates the keypoint stage from decoding noise.
    """
    differences = Differences()
    indices = sorted(vtest["frames"])
    persons_per_frame = [vtest["reference"]["frames"][index]["persons"] for index in indices]
    boxes = [np.array([person["bbox"] for person in persons], np.float32).reshape(-1, 4)
             for persons in persons_per_frame]
    poses = paddle_pipeline.keypoint_model.predict_many([vtest["frames"][index] for index in indices], boxes)
    for persons, pose in zip(persons_per_frame, poses):
        for person, keypoints, score in zip(persons, pose.keypoints, pose.scores):
            differences.add(person["bbox"], person["det_score"], person["keypoints"], person["kpt_score"],
                            person["bbox"], person["det_score"], keypoints, score)
    assert differences.keypoint <= KEYPOINT_TOL_PX, f"keypoints differ by {differences.keypoint:.4g} px"
    assert differences.joint_score <= SCORE_TOL, f"joint scores differ by {differences.joint_score:.3g}"


def test_vtest_full_pipeline_matches_within_decode_noise(vtest) -> None:
    """End to end on PyAV frames: boxes differ by at most a few hundredths of a pixel on a few frames
    (measured 0.015 px on frame 580, 0.004 elsewhere; the samples match bit for bit), and small
    upsampled persons turn that into up to ~0.3 px on a joint. The issue's 2 % metric holds with
    a wide margin (measured 0.09 %)."""
    differences = Differences()
    for index, result in vtest["results"].items():
        persons = vtest["reference"]["frames"][index]["persons"]
        assert len(result["boxes"]) == len(persons)
        for person, box in zip(persons, result["boxes"]):
            differences.add(person["bbox"], person["det_score"], person["keypoints"], person["kpt_score"],
                            box["coordinate"], box["det_score"], box["keypoints"], box["kpt_score"])
    assert differences.box <= 0.05
    assert differences.det_score <= 1e-3
    assert differences.keypoint <= 0.5
    assert differences.joint_score <= 0.02
    assert differences.relative <= TARGET_RELATIVE_DISTANCE / 10
