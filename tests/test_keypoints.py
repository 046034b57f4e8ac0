"""PP-TinyPose top-down: heatmap decoding, box and affine geometry, batching, flip and oneDNN.

Decoding is checked on synthetic heatmaps whose true peak is known to a fraction of a pixel, and
the vectorised DARK step against a plain per-joint port of the compat doc (§4.5) on real
heatmaps. Geometry is checked against PaddleX's own way of building the crop matrix and against
the heatmap convention the models were trained with.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from streampose.inputs import read_image
from streampose.models.heatmaps import argmax_peaks, dark_refine, decode_heatmaps
from streampose.models.keypoints import (
    KeypointModel,
    boxes_to_center_scale,
    crop_matrices,
    heatmap_to_image,
)
from streampose.models.registry import load_model_files
from streampose.runtime import RuntimeOptions

HEATMAP_W, HEATMAP_H = 24, 32
INPUT_WH = (96, 128)
ASPECT = 0.75


def gaussian_heatmap(center_x: float, center_y: float, sigma: float,
                     width: int = HEATMAP_W, height: int = HEATMAP_H) -> np.ndarray:
    """An unnormalised Gaussian like the training targets (peak 1 at a sub-pixel position)."""
    xs = np.arange(width, dtype=np.float64)[None, :]
    ys = np.arange(height, dtype=np.float64)[:, None]
    return np.exp(-((xs - center_x) ** 2 + (ys - center_y) ** 2) / (2 * sigma**2)).astype(np.float32)


def as_batch(*maps: np.ndarray) -> np.ndarray:
    """[1, J, H, W] from single maps."""
    return np.stack(maps)[None]


# -- heatmap decoding -----------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_dark_recovers_a_sub_pixel_peak(sigma: float) -> None:
    heatmaps = as_batch(gaussian_heatmap(10.3, 17.6, sigma), gaussian_heatmap(5.8, 8.2, sigma))
    coords, scores = decode_heatmaps(heatmaps, use_dark=True)
    np.testing.assert_allclose(coords[0], [[10.3, 17.6], [5.8, 8.2]], atol=0.05)
    # The score is the raw peak value, read before any blur.
    np.testing.assert_allclose(scores[0], heatmaps[0].reshape(2, -1).max(axis=1))


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_quarter_offset_gets_within_a_third_of_a_pixel(sigma: float) -> None:
    heatmaps = as_batch(gaussian_heatmap(10.3, 17.6, sigma))
    coords, _ = decode_heatmaps(heatmaps, use_dark=False)
    error = np.abs(coords[0, 0] - [10.3, 17.6])
    assert error.max() <= 0.35
    # The rule: integer argmax (10, 18) plus a quarter toward the higher neighbour.
    np.testing.assert_array_equal(coords[0, 0], [10.25, 17.75])


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        ((0.4, 5.2), (0.0, 5.0)),  # on the border
        ((1.3, 12.4), (1.0, 12.0)),  # px == 1: DARK needs 1 < px
        ((22.3, 12.4), (22.0, 12.0)),  # px == W-2: DARK needs px < W-2
        ((10.3, 1.4), (10.0, 1.0)),  # py == 1
        ((10.3, 29.6), (10.0, 30.0)),  # py == H-2
    ],
)
def test_peak_near_the_border_keeps_the_integer_argmax(peak, expected) -> None:
    coords, _ = decode_heatmaps(as_batch(gaussian_heatmap(*peak, sigma=1.5)), use_dark=True)
    np.testing.assert_array_equal(coords[0, 0], expected)


def test_first_interior_position_is_refined() -> None:
    """The other side of the border rule: px == 2 and px == W-3 are refined."""
    coords, _ = decode_heatmaps(as_batch(gaussian_heatmap(2.3, 12.4, 1.5), gaussian_heatmap(20.7, 12.4, 1.5)))
    np.testing.assert_allclose(coords[0], [[2.3, 12.4], [20.7, 12.4]], atol=0.05)


def test_non_positive_heatmaps_decode_to_the_origin() -> None:
    negative = -gaussian_heatmap(10.3, 17.6, 1.5) - 0.1
    zero = np.zeros((HEATMAP_H, HEATMAP_W), np.float32)
    for use_dark in (True, False):
        coords, scores = decode_heatmaps(as_batch(negative, zero), use_dark=use_dark)
        np.testing.assert_array_equal(coords[0], [[0.0, 0.0], [0.0, 0.0]])
        np.testing.assert_allclose(scores[0], [negative.max(), 0.0])


class CannedHeatmapSession:
    """Stands in for a runtime to test what happens after the model: returns fixed heatmaps."""

    backend_name = "canned"
    input_names = ["image"]

    def __init__(self, heatmap: np.ndarray) -> None:
        self.heatmap = heatmap
        self.batch_sizes: list[int] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = feeds["image"].shape[0]
        self.batch_sizes.append(count)
        maps = np.broadcast_to(self.heatmap, (count, 17) + self.heatmap.shape).copy()
        return [maps, maps.reshape(count, 17, -1).argmax(axis=2)]


@pytest.fixture(scope="module")
def tinypose_files(model_home: Path):
    return load_model_files("PP-TinyPose_128x96", None)


def test_non_positive_heatmap_joint_is_mapped_to_the_padded_box_corner(tinypose_files) -> None:
    """(0, 0) in the heatmap still goes through the inverse transform, as in PaddleX."""
    session = CannedHeatmapSession(np.full((HEATMAP_H, HEATMAP_W), -0.25, np.float32))
    model = KeypointModel(tinypose_files, session=session)
    image = np.zeros((300, 400, 3), np.uint8)
    box = np.array([[100.0, 50.0, 160.0, 250.0]], np.float32)
    pose = model.predict(image, box)
    center, scale = boxes_to_center_scale(box, ASPECT)
    corner = center[0] - scale[0] / 2
    np.testing.assert_allclose(pose.keypoints[0, :, :2], np.tile(corner, (17, 1)), atol=1e-4)
    np.testing.assert_allclose(pose.keypoints[0, :, 2], -0.25)
    assert pose.scores[0] == pytest.approx(-0.25)


def dark_reference(heatmap: np.ndarray, px: int, py: int) -> tuple[float, float]:
    """Per-joint DARK step written straight from the compat doc §4.5 (the oracle)."""
    height, width = heatmap.shape
    padded = np.pad(heatmap.astype(np.float64), 1)
    # PaddleX writes the blur back into the float32 heatmap array before rescaling it.
    blurred = cv2.GaussianBlur(padded, (3, 3), 0)[1:-1, 1:-1].astype(np.float32).astype(np.float64)
    blurred = blurred * (heatmap.max() / blurred.max())
    log = np.log(np.maximum(blurred, 1e-10))
    if not (1 < px < width - 2 and 1 < py < height - 2):
        return float(px), float(py)
    dx = 0.5 * (log[py, px + 1] - log[py, px - 1])
    dy = 0.5 * (log[py + 1, px] - log[py - 1, px])
    dxx = 0.25 * (log[py, px + 2] - 2 * log[py, px] + log[py, px - 2])
    dxy = 0.25 * (log[py + 1, px + 1] - log[py - 1, px + 1] - log[py + 1, px - 1] + log[py - 1, px - 1])
    dyy = 0.25 * (log[py + 2, px] - 2 * log[py, px] + log[py - 2, px])
    if dxx * dyy - dxy**2 == 0:
        return float(px), float(py)
    offset = -np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ np.array([dx, dy])
    return px + float(offset[0]), py + float(offset[1])


@pytest.fixture(scope="module")
def sample_images(samples_dir: Path) -> list[np.ndarray]:
    return [read_image(samples_dir / name) for name in ("messi5.jpg", "basketball1.png", "basketball2.png")]


@pytest.fixture(scope="module")
def sample_boxes(paddle_pipeline, sample_images) -> list[np.ndarray]:
    return [found.boxes for found in paddle_pipeline.detector.predict(sample_images, 0.5)]


@pytest.fixture(scope="module")
def real_heatmaps(paddle_pipeline, sample_images, sample_boxes) -> np.ndarray:
    model = paddle_pipeline.keypoint_model
    tensors = [model.make_crops(image, boxes)[0] for image, boxes in zip(sample_images, sample_boxes)]
    return model.heatmaps(np.concatenate(tensors))


def test_vectorised_dark_equals_the_per_joint_reference_on_real_heatmaps(real_heatmaps) -> None:
    assert real_heatmaps.shape == (5, 17, HEATMAP_H, HEATMAP_W)
    coords, _ = argmax_peaks(real_heatmaps)
    refined = dark_refine(real_heatmaps, coords)
    expected = np.array([[dark_reference(real_heatmaps[n, j], int(coords[n, j, 0]), int(coords[n, j, 1]))
                          for j in range(17)] for n in range(real_heatmaps.shape[0])])
    moved = np.abs(refined - coords).max(axis=2) > 1e-6
    assert moved.mean() > 0.5  # most joints are refined: the comparison is not vacuous
    # streampose blurs in float32 arithmetic (one OpenCV call for every map): the blurred values
    # differ from the float64 blur's rounding by about one float32 ulp, the peaks by < 1e-5 px.
    np.testing.assert_allclose(refined, expected, rtol=0, atol=1e-5)


# -- geometry ------------------------------------------------------------------------------------

def test_box_is_grown_to_the_model_aspect_then_padded() -> None:
    boxes = np.array([
        [0, 0, 200, 100],  # too wide: height grows to w / 0.75
        [10, 20, 40, 220],  # too tall: width grows to 0.75 h
        [5, 5, 80, 105],  # exactly 3:4, unchanged
    ], np.float32)
    centers, scales = boxes_to_center_scale(boxes, ASPECT)
    np.testing.assert_allclose(centers, [[100, 50], [25, 120], [42.5, 55]])
    np.testing.assert_allclose(scales, 1.25 * np.array([[200, 200 / 0.75], [150, 200], [75, 100]]), rtol=1e-6)


def paddlex_crop_matrix(center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int]) -> np.ndarray:
    """PaddleX's non-UDP matrix (compat §4.2): three float32 point pairs into cv2.getAffineTransform."""
    input_w, input_h = input_wh

    def third(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        direction = a - b
        return b + np.array([-direction[1], direction[0]], np.float32)

    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0, scale[0] * -0.5], np.float32)
    src[2] = third(src[0], src[1])
    dst[0] = [input_w * 0.5, input_h * 0.5]
    dst[1] = np.array([input_w * 0.5, input_h * 0.5]) + np.array([0, input_w * -0.5])
    dst[2] = third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def test_crop_matrix_is_paddlexs_to_the_last_bit() -> None:
    """Upsampled crops of small persons are sensitive to the matrix's last float32 bits.

    OpenCV's warpAffine samples on a 1/32-pixel grid, so a matrix a few 1e-7 off moves some
    samples by a grid step; on vtest.avi (persons ~50 px wide) that moves joints by 0.14 px and
    joint scores by 6e-3 against PaddleX (tests/test_parity.py). Building the matrix like
    PaddleX (float32 points, getAffineTransform) brings that down to 3e-4 px.
    """
    boxes = np.array([[637.6525, 238.57726, 685.0199, 322.88953], [66.93706, 56.6635, 460.74179, 336.77542],
                      [12.25, 400.5, 33.75, 455.0]], np.float32)
    centers, scales = boxes_to_center_scale(boxes, ASPECT)
    ours = crop_matrices(centers, scales, INPUT_WH, udp=False)
    for matrix, center, scale in zip(ours, centers.astype(np.float32), scales.astype(np.float32)):
        np.testing.assert_allclose(matrix, paddlex_crop_matrix(center, scale, INPUT_WH), rtol=0, atol=1e-9)


def test_non_udp_round_trip_through_the_heatmap_is_exact() -> None:
    """Image point → model input (crop matrix) → heatmap (input / 4) → image (inverse)."""
    boxes = np.array([[66.9, 56.7, 460.7, 336.8], [637.6, 238.6, 685.0, 322.9]], np.float32)
    centers, scales = boxes_to_center_scale(boxes, ASPECT)
    matrices = crop_matrices(centers, scales, INPUT_WH, udp=False)
    rng = np.random.default_rng(0)
    points = centers[:, None, :] + (rng.random((2, 17, 2)) - 0.5) * scales[:, None, :]
    homogeneous = np.concatenate([points, np.ones((2, 17, 1))], axis=2)
    inputs = np.einsum("nij,nkj->nki", matrices, homogeneous)
    back = heatmap_to_image(inputs / 4, centers, scales, (HEATMAP_W, HEATMAP_H), udp_inverse=False)
    for person in range(2):
        np.testing.assert_allclose(back[person], points[person], atol=1e-6 * scales[person, 0])


def test_udp_forward_maps_the_padded_box_onto_the_whole_input() -> None:
    centers, scales = boxes_to_center_scale(np.array([[100.0, 50.0, 160.0, 250.0]], np.float32), ASPECT)
    matrix = crop_matrices(centers, scales, INPUT_WH, udp=True)[0]
    corners = np.array([centers[0] - scales[0] / 2, centers[0] + scales[0] / 2])
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, [[0, 0], [INPUT_WH[0] - 1, INPUT_WH[1] - 1]], atol=1e-3)


def test_exact_udp_inverse_undoes_the_udp_crop_under_the_training_heatmap_convention() -> None:
    """PP-TinyPose was trained with UDP crops (TopDownAffine use_udp) but DARK targets
    (ToHeatmapsTopDown_DARK: heatmap = input / 4, not (input-1)/(heatmap-1)), see PaddleDetection
    configs/keypoint/tiny_pose/tinypose_128x96.yml. The "exact" UDP inverse must undo exactly
    that; an inverse built for UDP targets overshoots by ~3 % of the crop at its far edge and
    costs 5 AP on coco_train80 (tests/test_accuracy.py).
    """
    boxes = np.array([[100.0, 50.0, 160.0, 250.0]], np.float32)
    centers, scales = boxes_to_center_scale(boxes, ASPECT)
    matrices = crop_matrices(centers, scales, INPUT_WH, udp=True)
    points = centers[:, None, :] + np.array([[[-0.4, -0.45], [0.0, 0.0], [0.45, 0.4]]]) * scales[:, None, :]
    inputs = points @ matrices[0, :, :2].T + matrices[0, :, 2]
    back = heatmap_to_image(inputs / 4, centers, scales, (HEATMAP_W, HEATMAP_H), udp_inverse=True)
    np.testing.assert_allclose(back, points, atol=1e-3)


# -- batching, flip, oneDNN on real persons --------------------------------------------------------

def test_all_crops_in_one_call_equal_one_call_per_person(paddle_pipeline, sample_images, sample_boxes) -> None:
    model = paddle_pipeline.keypoint_model
    assert [len(boxes) for boxes in sample_boxes] == [1, 2, 2]
    images = [*sample_images, sample_images[0]]
    boxes = [*sample_boxes, np.zeros((0, 4), np.float32)]  # an image with nobody keeps its slot
    batched = model.predict_many(images, boxes)
    assert batched[3].keypoints.shape == (0, 17, 3) and batched[3].scores.shape == (0,)
    for image, image_boxes, together in zip(sample_images, sample_boxes, batched):
        for person, box in enumerate(image_boxes):
            alone = model.predict(image, box[None])
            np.testing.assert_allclose(together.keypoints[person, :, :2], alone.keypoints[0, :, :2], atol=1e-4)
            np.testing.assert_allclose(together.keypoints[person, :, 2], alone.keypoints[0, :, 2], atol=1e-5)
            assert together.scores[person] == pytest.approx(alone.keypoints[0, :, 2].mean(), abs=1e-6)


def test_flip_test_changes_keypoints_but_both_stay_on_the_person(paddle_pipeline, sample_images, sample_boxes) -> None:
    plain = paddle_pipeline.keypoint_model
    flipped = KeypointModel(plain.files, session=plain.session, flip=True)
    image, boxes = sample_images[1], sample_boxes[1]
    without, with_flip = plain.predict(image, boxes), flipped.predict(image, boxes)
    assert np.abs(without.keypoints[..., :2] - with_flip.keypoints[..., :2]).max() > 0.1
    for person, box in enumerate(boxes):
        diagonal = float(np.hypot(box[2] - box[0], box[3] - box[1]))
        distance = np.linalg.norm(without.keypoints[person, :, :2] - with_flip.keypoints[person, :, :2], axis=1)
        assert distance.mean() < 0.05 * diagonal
        for pose in (without, with_flip):
            confident = pose.keypoints[person, pose.keypoints[person, :, 2] > 0.3, :2]
            assert len(confident) >= 5
            margin = 0.1 * diagonal
            assert (confident[:, 0] >= box[0] - margin).all() and (confident[:, 0] <= box[2] + margin).all()
            assert (confident[:, 1] >= box[1] - margin).all() and (confident[:, 1] <= box[3] + margin).all()


def test_onednn_off_gives_the_same_keypoints(paddle_pipeline, sample_images, sample_boxes) -> None:
    plain = paddle_pipeline.keypoint_model
    without_onednn = KeypointModel(plain.files, RuntimeOptions(backend="paddle", enable_mkldnn=False))
    on = plain.predict_many(sample_images, sample_boxes)
    off = without_onednn.predict_many(sample_images, sample_boxes)
    for first, second in zip(on, off):
        np.testing.assert_allclose(first.keypoints[..., :2], second.keypoints[..., :2], atol=1e-3)
        np.testing.assert_allclose(first.keypoints[..., 2], second.keypoints[..., 2], atol=1e-5)


def test_two_threads_posing_at_once_get_the_poses_of_one_thread_alone(paddle_pipeline, sample_images,
                                                                      sample_boxes) -> None:
    """Crops and input tensors are reused per thread (streampose/models/scratch.py): two
    threads posing different images at once must not see each other's crops."""
    model = paddle_pipeline.keypoint_model
    expected = [model.predict(image, boxes) for image, boxes in zip(sample_images, sample_boxes)]
    failures: list[str] = []

    def keep_posing(order: list[int]) -> None:
        for _ in range(6):
            for index in order:
                got = model.predict(sample_images[index], sample_boxes[index])
                if not np.allclose(got.keypoints, expected[index].keypoints, atol=1e-4):
                    failures.append(f"image {index}")

    threads = [threading.Thread(target=keep_posing, args=(order,)) for order in ([0, 1, 2], [2, 1, 0])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
