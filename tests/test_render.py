"""Rendering: PaddleX's picture pixel for pixel, and the fast in-place video overlay."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest

from streampose.errors import ConfigError, InputError
from streampose.render import (
    PersonDrawing,
    SkeletonAnnotator,
    draw_hud,
    draw_paddlex_keypoints,
    hud_rect,
    track_colour,
)
from streampose.skeleton import (
    COCO_KEYPOINT_NAMES,
    COCO_SKELETON,
    FLIP_PAIRS,
    PADDLEX_PALETTE,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLES = SHARED / "samples"
REFERENCE = SHARED / "data" / "paddlex_reference"

# Written out again from the compat doc §7, so the tests do not trust the module's own constants.
DOC_PALETTE = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]  # fmt: skip
DOC_EDGES = [
    (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (5, 11), (6, 12), (11, 13), (12, 14), (13, 15), (14, 16), (11, 12),
]  # fmt: skip


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data missing: {path}")
    return path


@pytest.fixture(scope="module")
def basketball() -> np.ndarray:
    image = cv2.imread(str(_require(SAMPLES / "basketball1.png")), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def paddlex_keypoints() -> list[np.ndarray]:
    """PaddleX's own keypoints for basketball1.png, float32 as PaddleX holds them in memory."""
    path = _require(REFERENCE / "samples" / "base_128x96" / "basketball1_res.json")
    boxes = json.loads(path.read_text())["boxes"]
    return [np.asarray(box["keypoints"], dtype=np.float32) for box in boxes]


def reference_paddlex_drawing(
    image: np.ndarray, skeletons: list[np.ndarray], threshold: float = 0.1
) -> np.ndarray:
    """The compat doc's algorithm taken literally: every limb blended across the whole canvas."""
    canvas = image.copy()
    for joint in range(17):
        for person in skeletons:
            if person[joint, 2] >= threshold:
                x, y = person[joint, :2].astype(np.int32).tolist()
                cv2.circle(canvas, (x, y), 2, DOC_PALETTE[joint], thickness=-1)
    for edge, (a, b) in enumerate(DOC_EDGES):
        for person in skeletons:
            if person[a, 2] < threshold or person[b, 2] < threshold:
                continue
            layer = canvas.copy()
            ys, xs = [person[a, 1], person[b, 1]], [person[a, 0], person[b, 0]]
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            centre = (int(np.mean(xs)), int(np.mean(ys)))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), 1), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(layer, polygon, DOC_PALETTE[edge])
            canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
    return canvas


def drawn_limbs(
    skeletons: list[np.ndarray], threshold: float = 0.1
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    for edge, (a, b) in enumerate(DOC_EDGES):
        for person in skeletons:
            if person[a, 2] >= threshold and person[b, 2] >= threshold:
                yield edge, person[a, :2], person[b, :2]


def limb_masks(
    shape: tuple[int, ...], skeletons: list[np.ndarray]
) -> list[tuple[int, np.ndarray]]:
    """Where each drawn limb lies: its doc-specified ellipse rasterised into its own mask."""
    masks = []
    for edge, start, end in drawn_limbs(skeletons):
        mask = np.zeros(shape[:2], np.uint8)
        delta = start - end
        centre = (int((start[0] + end[0]) / 2), int((start[1] + end[1]) / 2))
        length = float(np.hypot(delta[0], delta[1]))
        angle = int(math.degrees(math.atan2(delta[1], delta[0])))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), 1), angle, 0, 360, 1)
        cv2.fillConvexPoly(mask, polygon, 1)
        masks.append((edge, mask.astype(bool)))
    return masks


def joint_disks(
    shape: tuple[int, ...], skeletons: list[np.ndarray], threshold: float = 0.1
) -> list[tuple[int, tuple[int, int], np.ndarray]]:
    """(joint index, integer centre, disk mask) for every drawn joint, in drawing order."""
    disks = []
    for joint in range(17):
        for person in skeletons:
            if person[joint, 2] >= threshold:
                x, y = person[joint, :2].astype(np.int32).tolist()
                mask = np.zeros(shape[:2], np.uint8)
                cv2.circle(mask, (x, y), 2, 1, thickness=-1)
                disks.append((joint, (x, y), mask.astype(bool)))
    return disks


def _standing_person(x: float, y: float, height: float, track_id: int | None) -> PersonDrawing:
    """A plausible upright skeleton (all scores 0.9) inside the box (x, y, x+h/2, y+h)."""
    unit = np.array(
        [
            (0.50, 0.08), (0.55, 0.05), (0.45, 0.05), (0.60, 0.07), (0.40, 0.07),
            (0.70, 0.22), (0.30, 0.22), (0.78, 0.40), (0.22, 0.40), (0.80, 0.55),
            (0.20, 0.55), (0.62, 0.55), (0.38, 0.55), (0.62, 0.75), (0.38, 0.75),
            (0.62, 0.95), (0.38, 0.95),
        ]
    )  # fmt: skip
    width = height / 2
    xy = unit * [width, height] + [x, y]
    keypoints = np.hstack([xy, np.full((17, 1), 0.9)])
    return PersonDrawing(
        bbox=np.array([x, y, x + width, y + height]), keypoints=keypoints, track_id=track_id
    )


# ------------------------------------------------------------------------------------------
# skeleton constants
# ------------------------------------------------------------------------------------------


def test_skeleton_constants_match_the_compat_doc() -> None:
    assert len(COCO_KEYPOINT_NAMES) == 17
    assert COCO_KEYPOINT_NAMES[0] == "nose" and COCO_KEYPOINT_NAMES[16] == "right_ankle"
    assert list(COCO_SKELETON) == DOC_EDGES
    assert [tuple(c) for c in PADDLEX_PALETTE] == DOC_PALETTE
    for left, right in FLIP_PAIRS:
        assert COCO_KEYPOINT_NAMES[left].replace("left_", "right_") == COCO_KEYPOINT_NAMES[right]
    assert sorted(j for pair in FLIP_PAIRS for j in pair) == list(range(1, 17))


# ------------------------------------------------------------------------------------------
# PaddleX-identical picture
# ------------------------------------------------------------------------------------------


def test_paddlex_picture_equals_full_canvas_blend_on_paddlex_output(
    basketball: np.ndarray, paddlex_keypoints: list[np.ndarray]
) -> None:
    original = basketball.copy()
    drawn = draw_paddlex_keypoints(basketball, paddlex_keypoints)
    expected = reference_paddlex_drawing(basketball, paddlex_keypoints)
    assert drawn is not basketball
    np.testing.assert_array_equal(basketball, original)  # the input is left alone
    np.testing.assert_array_equal(drawn, expected)
    assert (drawn != basketball).any(axis=2).sum() > 500


def test_bounding_rect_blend_equals_full_canvas_blend_at_the_borders(
    basketball: np.ndarray,
) -> None:
    """Random people spilling over every edge: clipping the per-limb rectangle must not matter."""
    height, width = basketball.shape[:2]
    rng = np.random.default_rng(7)
    skeletons = []
    for _ in range(6):
        centre = rng.uniform([-40, -40], [width + 40, height + 40])
        xy = centre + rng.normal(0, 80, size=(17, 2))
        scores = rng.uniform(0.0, 1.0, size=(17, 1))
        skeletons.append(np.hstack([xy, scores]).astype(np.float32))
    for threshold in (0.1, 0.5):
        expected = reference_paddlex_drawing(basketball, skeletons, threshold)
        np.testing.assert_array_equal(
            draw_paddlex_keypoints(basketball, skeletons, threshold), expected
        )


def test_paddlex_picture_changes_pixels_only_near_the_skeleton(
    basketball: np.ndarray, paddlex_keypoints: list[np.ndarray]
) -> None:
    drawn = draw_paddlex_keypoints(basketball, paddlex_keypoints)
    near = np.zeros(basketball.shape[:2], np.uint8)
    for _, start, end in drawn_limbs(paddlex_keypoints):
        cv2.line(near, tuple(map(int, start)), tuple(map(int, end)), 1, thickness=2 * 4 + 1)
    for _, centre, _ in joint_disks(basketball.shape, paddlex_keypoints):
        cv2.circle(near, centre, 2 + 3, 1, thickness=-1)
    changed = (drawn != basketball).any(axis=2)
    assert changed.sum() > 500
    assert not (changed & (near == 0)).any()


def test_paddlex_joints_are_opaque_palette_dots(
    basketball: np.ndarray, paddlex_keypoints: list[np.ndarray]
) -> None:
    drawn = draw_paddlex_keypoints(basketball, paddlex_keypoints)
    covered_by_limb = np.zeros(basketball.shape[:2], bool)
    for _, mask in limb_masks(basketball.shape, paddlex_keypoints):
        covered_by_limb |= mask
    disks = joint_disks(basketball.shape, paddlex_keypoints)
    checked = 0
    for order, (joint, _, disk) in enumerate(disks):
        drawn_later = np.zeros_like(disk)
        for _, _, later in disks[order + 1 :]:
            drawn_later |= later
        clean = disk & ~covered_by_limb & ~drawn_later
        if clean.any():
            assert (drawn[clean] == DOC_PALETTE[joint]).all(), f"joint {joint}"
            checked += 1
    assert checked >= 20  # 2 persons, most joints have an uncovered part of their dot


def test_paddlex_limb_is_a_40_60_blend_over_the_photo(
    basketball: np.ndarray, paddlex_keypoints: list[np.ndarray]
) -> None:
    drawn = draw_paddlex_keypoints(basketball, paddlex_keypoints)
    masks = limb_masks(basketball.shape, paddlex_keypoints)
    dots = np.zeros(basketball.shape[:2], bool)
    for _, _, disk in joint_disks(basketball.shape, paddlex_keypoints):
        dots |= disk
    limbs = list(drawn_limbs(paddlex_keypoints))
    checked = 0
    for index, ((edge, mask), (_, start, end)) in enumerate(zip(masks, limbs)):
        x, y = int((start[0] + end[0]) / 2), int((start[1] + end[1]) / 2)
        others = [other for j, (_, other) in enumerate(masks) if j != index]
        if not mask[y, x] or dots[y, x] or any(other[y, x] for other in others):
            continue
        original = basketball[y, x].astype(float)
        expected = 0.4 * original + 0.6 * np.asarray(DOC_PALETTE[edge], float)
        assert np.abs(drawn[y, x] - expected).max() <= 0.5 + 1e-6, f"limb {edge} at {(x, y)}"
        checked += 1
    assert checked >= 15


def test_paddlex_skips_low_score_joints(
    basketball: np.ndarray, paddlex_keypoints: list[np.ndarray]
) -> None:
    second_person = paddlex_keypoints[1]
    left_ankle = 15
    assert second_person[left_ankle, 2] < 0.1  # PaddleX's own score for it
    drawn = draw_paddlex_keypoints(basketball, paddlex_keypoints)
    x, y = second_person[left_ankle, :2].astype(int)
    window = np.s_[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5]
    np.testing.assert_array_equal(drawn[window], basketball[window])
    # With a threshold above every score nothing at all is drawn.
    np.testing.assert_array_equal(
        draw_paddlex_keypoints(basketball, paddlex_keypoints, threshold=2.0), basketball
    )


def test_paddlex_picture_without_persons_is_an_identical_copy(basketball: np.ndarray) -> None:
    drawn = draw_paddlex_keypoints(basketball, [])
    assert drawn is not basketball
    np.testing.assert_array_equal(drawn, basketball)


def test_garbage_keypoints_are_skipped_not_fatal(basketball: np.ndarray) -> None:
    """NaN or absurdly far joints (a diverged tracker) must not crash a long video run."""
    person = _standing_person(100, 60, 150, 1)
    broken = person.keypoints.copy()
    broken[9] = (np.nan, 50.0, 0.9)  # left wrist
    broken[10] = (1e12, -1e12, 0.9)  # right wrist
    person.keypoints = broken
    sane = broken.copy()
    sane[9:11, 2] = 0.0  # what "skipped" must look like

    picture = draw_paddlex_keypoints(basketball, [broken])
    np.testing.assert_array_equal(picture, draw_paddlex_keypoints(basketball, [sane]))

    annotator = SkeletonAnnotator()
    frame = annotator.annotate(np.zeros((300, 400, 3), np.uint8), [person])
    expected = annotator.annotate(
        np.zeros((300, 400, 3), np.uint8), [PersonDrawing(person.bbox, sane, 1)]
    )
    np.testing.assert_array_equal(frame, expected)


def test_paddlex_picture_rejects_wrong_shapes_with_one_line(basketball: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"keypoints of person 0: expected shape \(17, 3\)"):
        draw_paddlex_keypoints(basketball, [np.zeros((16, 3))])
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        draw_paddlex_keypoints(basketball[:, :, 0], [])


# ------------------------------------------------------------------------------------------
# Streaming annotator
# ------------------------------------------------------------------------------------------


def test_annotate_draws_in_place_and_returns_the_same_frame() -> None:
    frame = np.zeros((300, 400, 3), np.uint8)
    address = frame.ctypes.data
    result = SkeletonAnnotator().annotate(frame, [_standing_person(100, 60, 150, 3)])
    assert result is frame and frame.ctypes.data == address
    assert (frame != 0).any(axis=2).sum() > 300


def test_annotate_accepts_any_object_with_the_person_attributes() -> None:
    person = _standing_person(100, 60, 150, 5)
    look_alike = SimpleNamespace(
        bbox=person.bbox.tolist(), keypoints=person.keypoints.tolist(), track_id=5, det_score=0.8
    )
    annotator = SkeletonAnnotator()
    expected = annotator.annotate(np.zeros((300, 400, 3), np.uint8), [person])
    drawn = annotator.annotate(np.zeros((300, 400, 3), np.uint8), [look_alike])
    np.testing.assert_array_equal(drawn, expected)


def test_box_colour_is_fixed_per_track_id() -> None:
    annotator = SkeletonAnnotator(draw_labels=False)
    colours = {}
    for track_id in (3, 4, 3 + 1000):
        frame = np.zeros((300, 400, 3), np.uint8)
        annotator.annotate(frame, [_standing_person(100, 60, 150, track_id)])
        colours[track_id] = tuple(frame[135, 100])  # middle of the box's left edge
        assert colours[track_id] == track_colour(track_id)
    assert colours[3] != colours[4]
    assert track_colour(3) == track_colour(3)
    assert track_colour(None) != track_colour(3)


def test_label_shows_the_track_id_deterministically() -> None:
    annotator = SkeletonAnnotator()

    def label_region(track_id: int | None) -> np.ndarray:
        frame = np.zeros((300, 400, 3), np.uint8)
        annotator.annotate(frame, [_standing_person(100, 60, 150, track_id)])
        return frame[30:60, 95:160].copy()  # just above the box's top-left corner

    seven = label_region(7)
    np.testing.assert_array_equal(seven, label_region(7))
    assert not np.array_equal(seven, label_region(12))
    assert (seven == track_colour(7)).all(axis=2).sum() > 50  # filled tag in the track colour
    assert (seven != track_colour(7)).any(axis=2).sum() > 10  # with text on it
    untracked = label_region(None)
    assert not untracked.any()  # no tag above the box without an id


def test_annotator_hides_joints_below_its_threshold() -> None:
    person = _standing_person(100, 60, 150, None)
    person.keypoints[9, 2] = 0.2  # left wrist: visible to PaddleX's 0.1, hidden at video's 0.3
    wrist_x, wrist_y = person.keypoints[9, :2].astype(int)
    window = np.s_[wrist_y - 1 : wrist_y + 2, wrist_x - 1 : wrist_x + 2]
    hidden = SkeletonAnnotator(draw_boxes=False).annotate(
        np.zeros((300, 400, 3), np.uint8), [person]
    )
    shown = SkeletonAnnotator(0.1, draw_boxes=False).annotate(
        np.zeros((300, 400, 3), np.uint8), [person]
    )
    assert not hidden[window].any()
    assert shown[window].any()


def test_thickness_follows_person_height() -> None:
    annotator = SkeletonAnnotator()
    assert annotator.thickness_for(150) == 2
    assert annotator.thickness_for(300) == 4
    assert annotator.thickness_for(40) == 1
    assert annotator.thickness_for(10_000) == 8


def test_annotate_rejects_a_read_only_frame() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    frame.flags.writeable = False
    with pytest.raises(InputError, match="read-only"):
        SkeletonAnnotator().annotate(frame, [_standing_person(10, 10, 50, 1)])


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="reference_height"):
        SkeletonAnnotator(reference_height=0)
    with pytest.raises(ConfigError, match="HUD opacity"):
        draw_hud(np.zeros((50, 50, 3), np.uint8), ["fps 1"], opacity=1.5)


def test_hud_darkens_only_its_rectangle() -> None:
    frame = np.full((240, 320, 3), 200, np.uint8)
    lines = ["fps 29.7", "persons 6", "drops 0"]
    x, y, width, height = hud_rect(lines, frame.shape)
    assert width > 40 and height > 30
    result = draw_hud(frame, lines)
    assert result is frame
    inside = np.zeros(frame.shape[:2], bool)
    inside[y : y + height, x : x + width] = True
    np.testing.assert_array_equal(frame[~inside], 200)
    panel = frame[inside]
    # Mostly background darkened to 40 % (semi-transparent, not black), plus white text.
    assert (panel == 80).all(axis=1).mean() > 0.7
    assert (panel > 200).all(axis=1).sum() > 30
    np.testing.assert_array_equal(draw_hud(np.full((50, 50, 3), 9, np.uint8), []), 9)


def test_hud_panel_is_clipped_to_small_frames() -> None:
    frame = np.full((30, 40, 3), 100, np.uint8)
    draw_hud(frame, ["a rather long status line that cannot fit"])
    x, y, width, height = hud_rect(["a rather long status line that cannot fit"], frame.shape)
    assert x + width <= 40 and y + height <= 30
    assert (frame[:8] == 100).all() and (frame[:, :8] == 100).all()


# ------------------------------------------------------------------------------------------
# Speed on a real busy frame
# ------------------------------------------------------------------------------------------


def _vtest_frame_and_persons(index: int) -> tuple[np.ndarray, list[PersonDrawing]]:
    reference = json.loads(_require(REFERENCE / "vtest.avi.json").read_text())
    persons = [
        PersonDrawing(
            bbox=np.asarray(p["bbox"], float),
            keypoints=np.asarray(p["keypoints"], np.float32),
            track_id=number + 1,
            det_score=p["det_score"],
        )
        for number, p in enumerate(reference["frames"][index]["persons"])
    ]
    with av.open(str(_require(SAMPLES / "vtest.avi"))) as container:
        for position, decoded in enumerate(container.decode(video=0)):
            if position == index:
                return decoded.to_ndarray(format="bgr24"), persons
    raise AssertionError("vtest.avi is shorter than expected")


def test_annotator_is_fast_for_eight_persons() -> None:
    frame, persons = _vtest_frame_and_persons(134)
    assert len(persons) == 8 and frame.shape == (576, 768, 3)
    annotator = SkeletonAnnotator()
    scratch = frame.copy()
    for _ in range(20):  # warm-up
        annotator.annotate(scratch, persons)
    timings = []
    for _ in range(200):
        np.copyto(scratch, frame)
        started = time.perf_counter()
        annotator.annotate(scratch, persons)
        timings.append(time.perf_counter() - started)
    hud_timings = []
    for _ in range(200):
        started = time.perf_counter()
        draw_hud(scratch, ["fps 10.0", "persons 8", "drops 0"])
        hud_timings.append(time.perf_counter() - started)
    median_ms = 1000 * float(np.median(timings))
    hud_ms = 1000 * float(np.median(hud_timings))
    print(f"\nannotate 8 persons on 768x576: median {median_ms:.3f} ms; HUD {hud_ms:.3f} ms")
    assert median_ms < 15.0  # sanity bound only; the real figure is printed above
    assert hud_ms < 5.0
