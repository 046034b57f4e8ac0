"""Skeletons, boxes, track ids and a HUD drawn on BGR uint8 frames (OpenCV channel order).

Two renderers with different promises:

* :func:`draw_paddlex_keypoints` reproduces the picture PaddleX's ``save_to_img`` writes for the
  ``human_keypoint_detection`` pipeline, pixel for pixel (compat doc §7). It returns a new array,
  because callers hand it the original image they still need.
* :class:`SkeletonAnnotator` and :func:`draw_hud` are for video: anti-aliased, scaled to the
  person, labelled with track ids, and fast. They draw **in place** on the frame the pipeline
  already owns, so a 30 fps stream costs no extra frame copy.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import cv2
import numpy as np

from streampose.errors import ConfigError, InputError
from streampose.skeleton import COCO_SKELETON, NUM_KEYPOINTS, PADDLEX_PALETTE

BGR = tuple[int, int, int]

PADDLEX_KEYPOINT_THRESHOLD: Final = 0.1
_PADDLEX_JOINT_RADIUS: Final = 2
_PADDLEX_LIMB_HALF_WIDTH: Final = 1
_PADDLEX_LIMB_OPACITY: Final = 0.6
# Farther than this from the frame a keypoint is garbage, and OpenCV's int32 maths would overflow.
_COORDINATE_LIMIT: Final = 100_000.0


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_bgr_image(image: object, what: str) -> np.ndarray:
    """Reject anything OpenCV would refuse with a cryptic message, or draw wrongly in silence."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what}: expected a numpy BGR image, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"{what}: expected a uint8 array of shape (H, W, 3), "
            f"got {image.dtype} of shape {image.shape}"
        )
    return image


def _check_drawable_in_place(scene: object, what: str) -> np.ndarray:
    """In-place drawing needs a writable array OpenCV can address (ROI views are fine)."""
    image = _check_bgr_image(scene, what)
    if not image.flags.writeable:
        raise InputError(f"{what}: the frame is read-only, pass a writable copy to draw on")
    if image.strides[2] != 1 or image.strides[1] != 3 or image.strides[0] <= 0:
        raise InputError(
            f"{what}: pixel layout with strides {image.strides} cannot be drawn on in place "
            "(pass np.ascontiguousarray(frame))"
        )
    return image


def _as_keypoint_array(value: object, what: str, dtype: type[np.floating]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what}: not a numeric (17, 3) array ({error})") from None
    if array.shape != (NUM_KEYPOINTS, 3):
        raise InputError(f"{what}: expected shape ({NUM_KEYPOINTS}, 3), got {array.shape}")
    return array


# --------------------------------------------------------------------------------------------
# PaddleX-identical picture
# --------------------------------------------------------------------------------------------


def draw_paddlex_keypoints(
    image_bgr: np.ndarray,
    keypoints: Sequence[np.ndarray],
    threshold: float = PADDLEX_KEYPOINT_THRESHOLD,
) -> np.ndarray:
    """Return a new BGR image with the skeletons exactly as PaddleX's ``save_to_img`` draws them.

    PaddleX draws no boxes and no text: opaque joint dots first, then 17 thin limb ellipses,
    each blended 40/60 over what is already there, limb by limb. A joint below ``threshold`` is
    not drawn, nor any limb touching it. The arithmetic follows PaddleX's float32 results (the
    keypoints are read as float32 and positions truncated toward zero as PaddleX does), so the
    pixels match. One deliberate difference: a joint with a non-finite coordinate, or one more
    than 100 000 px away, is skipped, where PaddleX would crash or draw garbage.

    Unlike PaddleX, each limb is blended only inside its polygon's bounding rectangle instead of
    across the whole canvas: pixels outside the polygon blend with themselves and stay equal, so
    the result is identical at a fraction of the cost.
    """
    canvas = _check_bgr_image(image_bgr, "image to draw keypoints on").copy()
    skeletons = [
        _as_keypoint_array(person, f"keypoints of person {index}", np.float32)
        for index, person in enumerate(keypoints)
    ]
    if not skeletons:
        return canvas
    usable = [
        (np.abs(person[:, :2]) <= _COORDINATE_LIMIT).all(axis=1) & (person[:, 2] >= threshold)
        for person in skeletons
    ]  # NaN fails the <= test, so non-finite positions are dropped too

    # Loop order (joint, then person; limb, then person) matters where drawings overlap.
    for joint in range(NUM_KEYPOINTS):
        colour = PADDLEX_PALETTE[joint]
        for person, visible in zip(skeletons, usable):
            if visible[joint]:
                centre = (int(person[joint, 0]), int(person[joint, 1]))
                cv2.circle(canvas, centre, _PADDLEX_JOINT_RADIUS, colour, thickness=-1)

    for limb, (start, end) in enumerate(COCO_SKELETON):
        colour = PADDLEX_PALETTE[limb]
        for person, visible in zip(skeletons, usable):
            if visible[start] and visible[end]:
                polygon = _paddlex_limb_polygon(person[start], person[end])
                _blend_convex_polygon(canvas, polygon, colour, _PADDLEX_LIMB_OPACITY)
    return canvas


def _paddlex_limb_polygon(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The limb ellipse as PaddleX builds it: float32 maths, integer centre, axes and angle."""
    start_x, start_y = start[0], start[1]  # numpy float32 scalars: keep float32 arithmetic
    end_x, end_y = end[0], end[1]
    centre = (int((start_x + end_x) / 2), int((start_y + end_y) / 2))
    length = ((start_y - end_y) ** 2 + (start_x - end_x) ** 2) ** 0.5
    angle = int(math.degrees(math.atan2(float(start_y - end_y), float(start_x - end_x))))
    half_axes = (int(length / 2), _PADDLEX_LIMB_HALF_WIDTH)
    return cv2.ellipse2Poly(centre, half_axes, angle, 0, 360, 1)


def _blend_convex_polygon(
    canvas: np.ndarray, polygon: np.ndarray, colour: BGR, opacity: float
) -> None:
    """Blend a filled polygon over ``canvas`` in place, touching only its bounding rectangle."""
    left, top, width, height = cv2.boundingRect(polygon)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + width, canvas.shape[1]), min(top + height, canvas.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    region = canvas[y0:y1, x0:x1]
    painted = region.copy()
    cv2.fillConvexPoly(painted, polygon - np.array([x0, y0], dtype=polygon.dtype), colour)
    cv2.addWeighted(region, 1.0 - opacity, painted, opacity, 0.0, dst=region)


# --------------------------------------------------------------------------------------------
# Streaming overlay
# --------------------------------------------------------------------------------------------


class DrawablePerson(Protocol):
    """What the annotator reads from a person; any object with these attributes will do."""

    @property
    def bbox(self) -> np.ndarray: ...  # (4,) x1, y1, x2, y2 in frame pixels

    @property
    def keypoints(self) -> np.ndarray: ...  # (17, 3) x, y, score

    @property
    def track_id(self) -> int | None: ...

    @property
    def det_score(self) -> float: ...


@dataclass(eq=False)  # arrays have no single truth value, so field-wise == would raise
class PersonDrawing:
    """The minimum the renderer needs about one person; other modules convert into it."""

    bbox: np.ndarray
    keypoints: np.ndarray
    track_id: int | None = None
    det_score: float = 0.0


def _spread_hues(count: int) -> tuple[BGR, ...]:
    """Bright colours whose hues step by the golden ratio, so consecutive ids look different."""
    colours = []
    for index in range(count):
        hue = (index * 0.618033988749895) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
        colours.append((round(blue * 255), round(green * 255), round(red * 255)))
    return tuple(colours)


TRACK_PALETTE: Final[tuple[BGR, ...]] = _spread_hues(20)
UNTRACKED_COLOUR: Final[BGR] = (200, 200, 200)


def track_colour(track_id: int | None) -> BGR:
    """The box colour of a track: fixed per id for the whole video, grey for untracked persons."""
    if track_id is None:
        return UNTRACKED_COLOUR
    return TRACK_PALETTE[int(track_id) % len(TRACK_PALETTE)]


def _legible_text_colour(background: BGR) -> BGR:
    blue, green, red = background
    luma = 0.114 * blue + 0.587 * green + 0.299 * red
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


_SUBPIXEL_BITS: Final = 4  # cv2 "shift": positions in 1/16 px, so slow motion does not jump
_SUBPIXEL_SCALE: Final = 1 << _SUBPIXEL_BITS
_LABEL_FONT: Final = cv2.FONT_HERSHEY_SIMPLEX
_LIMB_COLOURS: Final[tuple[BGR, ...]] = PADDLEX_PALETTE[: len(COCO_SKELETON)]
_JOINT_COLOURS: Final[tuple[BGR, ...]] = PADDLEX_PALETTE[:NUM_KEYPOINTS]


class SkeletonAnnotator:
    """Draws limbs, joints, track-coloured boxes and ``#id`` labels onto a video frame in place.

    ``keypoint_threshold`` defaults to 0.3, higher than PaddleX's 0.1 for still pictures: in
    video, joints scored 0.1-0.3 are mostly occluded or guessed and flicker from frame to frame,
    which reads as noise; hiding them keeps the moving skeleton calm.

    Line thickness follows the box height (``reference_thickness`` px at ``reference_height`` px),
    so far-away people are not buried under their own skeleton and near ones stay visible.
    """

    def __init__(
        self,
        keypoint_threshold: float = 0.3,
        *,
        draw_boxes: bool = True,
        draw_labels: bool = True,
        reference_height: float = 150.0,
        reference_thickness: int = 2,
        max_thickness: int = 8,
        label_font_scale: float = 0.45,
    ) -> None:
        if reference_height <= 0 or reference_thickness < 1 or max_thickness < 1:
            raise ConfigError(
                "SkeletonAnnotator: reference_height must be > 0 and thicknesses >= 1, got "
                f"{reference_height}, {reference_thickness}, {max_thickness}"
            )
        self.keypoint_threshold = float(keypoint_threshold)
        self.draw_boxes = draw_boxes
        self.draw_labels = draw_labels
        self.reference_height = float(reference_height)
        self.reference_thickness = int(reference_thickness)
        self.max_thickness = int(max_thickness)
        self.label_font_scale = float(label_font_scale)

    def thickness_for(self, box_height: float) -> int:
        """Limb thickness in pixels for a person whose box is ``box_height`` pixels tall."""
        if not math.isfinite(box_height) or box_height <= 0:
            return self.reference_thickness
        scaled = round(self.reference_thickness * box_height / self.reference_height)
        return max(1, min(self.max_thickness, scaled))

    def annotate(self, scene: np.ndarray, persons: Iterable[DrawablePerson]) -> np.ndarray:
        """Draw every person onto ``scene`` and return that same array (no copy is made)."""
        frame = _check_drawable_in_place(scene, "frame to annotate")
        people = list(persons)
        if not people:
            return frame
        keypoints = np.stack(
            [
                _as_keypoint_array(person.keypoints, f"keypoints of person {index}", np.float64)
                for index, person in enumerate(people)
            ]
        )
        boxes = self._boxes_of(people)
        # One vectorised pass for all persons; the drawing loop then works on plain ints.
        positions = keypoints[:, :, :2]
        visible = (keypoints[:, :, 2] >= self.keypoint_threshold) & (
            np.abs(positions) <= _COORDINATE_LIMIT
        ).all(axis=2)  # NaN fails the <= test
        subpixel = np.rint(
            np.clip(np.nan_to_num(positions), -_COORDINATE_LIMIT, _COORDINATE_LIMIT)
            * _SUBPIXEL_SCALE
        ).astype(np.int64)
        heights = boxes[:, 3] - boxes[:, 1]

        for person, points, shown, height, box in zip(
            people, subpixel.tolist(), visible.tolist(), heights.tolist(), boxes
        ):
            thickness = self.thickness_for(height)
            self._draw_skeleton(frame, points, shown, thickness)
            if self.draw_boxes or self.draw_labels:
                self._draw_box_and_label(frame, box, person.track_id, thickness)
        return frame

    @staticmethod
    def _boxes_of(people: list[DrawablePerson]) -> np.ndarray:
        boxes = []
        for index, person in enumerate(people):
            box = np.asarray(person.bbox, dtype=np.float64).reshape(-1)
            if box.shape != (4,):
                raise InputError(f"bbox of person {index}: expected 4 values, got {box.size}")
            boxes.append(box)
        return np.stack(boxes)

    @staticmethod
    def _draw_skeleton(
        frame: np.ndarray, points: list[list[int]], shown: list[bool], thickness: int
    ) -> None:
        for (start, end), colour in zip(COCO_SKELETON, _LIMB_COLOURS):
            if shown[start] and shown[end]:
                cv2.line(
                    frame,
                    points[start],
                    points[end],
                    colour,
                    thickness,
                    cv2.LINE_AA,
                    _SUBPIXEL_BITS,
                )
        radius = (thickness + 1) * _SUBPIXEL_SCALE
        for joint, colour in enumerate(_JOINT_COLOURS):
            if shown[joint]:
                cv2.circle(frame, points[joint], radius, colour, -1, cv2.LINE_AA, _SUBPIXEL_BITS)

    def _draw_box_and_label(
        self, frame: np.ndarray, box: np.ndarray, track_id: int | None, thickness: int
    ) -> None:
        if not np.isfinite(box).all():
            return
        clipped = np.clip(box, -_COORDINATE_LIMIT, _COORDINATE_LIMIT)
        x1, y1, x2, y2 = (int(round(value)) for value in clipped.tolist())
        colour = track_colour(track_id)
        if self.draw_boxes:
            cv2.rectangle(frame, (x1, y1), (x2, y2), colour, max(1, thickness - 1), cv2.LINE_8)
        if self.draw_labels and track_id is not None:
            self._draw_label(frame, f"#{track_id}", x1, y1, colour)

    def _draw_label(self, frame: np.ndarray, text: str, x: int, y: int, colour: BGR) -> None:
        """A filled tag on the box's top-left corner; inside the box when the top edge is cut."""
        (text_width, text_height), baseline = cv2.getTextSize(
            text, _LABEL_FONT, self.label_font_scale, 1
        )
        padding = 2
        tag_height = text_height + baseline + 2 * padding
        top = y - tag_height if y - tag_height >= 0 else y
        x = max(x, 0)
        cv2.rectangle(
            frame, (x, top), (x + text_width + 2 * padding, top + tag_height), colour, cv2.FILLED
        )
        cv2.putText(
            frame,
            text,
            (x + padding, top + padding + text_height),
            _LABEL_FONT,
            self.label_font_scale,
            _legible_text_colour(colour),
            1,
            cv2.LINE_AA,
        )


# --------------------------------------------------------------------------------------------
# HUD
# --------------------------------------------------------------------------------------------

_HUD_FONT: Final = cv2.FONT_HERSHEY_SIMPLEX
_HUD_MARGIN: Final = 8
_HUD_PADDING: Final = 6
_HUD_LINE_GAP: Final = 4


def _hud_layout(lines: Sequence[str], font_scale: float) -> tuple[int, int, int]:
    """Widest text, height of one text line, and its baseline depth, all in pixels."""
    sizes = [cv2.getTextSize(line, _HUD_FONT, font_scale, 1) for line in lines]
    text_width = max(width for (width, _), _ in sizes)
    baseline = max(depth for _, depth in sizes)
    line_height = max(height for (_, height), _ in sizes) + baseline
    return text_width, line_height, baseline


def hud_rect(
    lines: Sequence[str], frame_shape: tuple[int, ...], font_scale: float = 0.5
) -> tuple[int, int, int, int]:
    """The HUD panel as (x, y, width, height), clipped to the frame; empty when nothing shows."""
    if not lines:
        return (_HUD_MARGIN, _HUD_MARGIN, 0, 0)
    text_width, line_height, _ = _hud_layout(lines, font_scale)
    width = text_width + 2 * _HUD_PADDING
    height = len(lines) * line_height + (len(lines) - 1) * _HUD_LINE_GAP + 2 * _HUD_PADDING
    frame_height, frame_width = frame_shape[:2]
    width = max(0, min(width, frame_width - _HUD_MARGIN))
    height = max(0, min(height, frame_height - _HUD_MARGIN))
    return (_HUD_MARGIN, _HUD_MARGIN, width, height)


def draw_hud(
    scene: np.ndarray, lines: Sequence[str], *, font_scale: float = 0.5, opacity: float = 0.6
) -> np.ndarray:
    """Write ``lines`` (fps, persons, drops) on a darkened top-left panel of ``scene``, in place.

    Only the panel rectangle is darkened and written, so the cost does not grow with the frame
    size, and the video around the panel is left exactly as it was. Returns ``scene`` itself.
    """
    frame = _check_drawable_in_place(scene, "frame for the HUD")
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"HUD opacity: expected a value in [0, 1], got {opacity}")
    x, y, width, height = hud_rect(lines, frame.shape, font_scale)
    if width == 0 or height == 0:
        return frame
    panel = frame[y : y + height, x : x + width]
    cv2.convertScaleAbs(panel, dst=panel, alpha=1.0 - opacity, beta=0.0)
    _, line_height, baseline = _hud_layout(lines, font_scale)
    # Text goes into the panel view, so OpenCV clips it to the rectangle.
    for row, line in enumerate(lines):
        baseline_y = _HUD_PADDING + row * (line_height + _HUD_LINE_GAP) + line_height - baseline
        cv2.putText(
            panel,
            line,
            (_HUD_PADDING, baseline_y),
            _HUD_FONT,
            font_scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return frame
