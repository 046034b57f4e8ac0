"""Tracker, Kalman box filter and detection schedule: synthetic motion and PaddleX's vtest boxes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from streampose.errors import ConfigError
from streampose.tracking import (
    BoxKalman,
    BoxTracker,
    DetectionSchedule,
    TrackerConfig,
    associate,
    iou_matrix,
)

VTEST_REFERENCE = (
    Path(__file__).resolve().parents[1].parent / "shared/data/paddlex_reference/vtest.avi.json"
)


def box(cx: float, cy: float, w: float = 40.0, h: float = 80.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def step(tracker: BoxTracker, boxes: list[np.ndarray], scores: list[float] | None = None):
    """One detector frame: predict, then update."""
    tracker.predict()
    arr = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    sc = np.array(scores if scores is not None else [0.9] * len(arr), dtype=np.float64)
    return tracker.update(arr, sc)


def ids_by_detection(tracks) -> dict[int, int]:
    return {t.det_index: t.track_id for t in tracks if t.det_index is not None}


# --------------------------------------------------------------------------- synthetic motion


def test_crossing_people_keep_their_ids() -> None:
    tracker = BoxTracker()
    rng = np.random.default_rng(1)
    id_of_a, id_of_b = set(), set()
    for frame in range(60):
        a = box(100 + 8 * frame, 200)  # walks right
        b = box(580 - 8 * frame, 215)  # walks left, overlapping A heavily as they pass
        order = rng.permutation(2)  # detector output order carries no identity
        dets = [a, b] if order[0] == 0 else [b, a]
        by_det = ids_by_detection(step(tracker, dets))
        if frame >= 1:  # from the second frame both are confirmed and posed
            assert len(by_det) == 2
            id_of_a.add(by_det[int(np.where(order == 0)[0][0])])
            id_of_b.add(by_det[int(np.where(order == 1)[0][0])])
    # They overlap most at frame 30 (IoU about 0.6); ids must survive the crossing.
    assert iou_matrix(box(340, 200), box(340, 215))[0, 0] > 0.5
    assert len(id_of_a) == 1 and len(id_of_b) == 1
    assert id_of_a != id_of_b


def test_constant_velocity_prediction_without_detections() -> None:
    tracker = BoxTracker()
    velocity = np.array([6.0, -3.0])
    for frame in range(12):
        step(tracker, [box(100 + velocity[0] * frame, 300 + velocity[1] * frame, 50, 100)])
    for gap in range(1, 4):
        (track,) = tracker.predict()
        frame = 11 + gap
        truth = box(100 + velocity[0] * frame, 300 + velocity[1] * frame, 50, 100)
        # A box that stayed put would be 6.7 px (one frame) to 20 px (three frames) off.
        assert np.abs(track.box - truth).max() < 2.0, (gap, track.box, truth)
        assert track.time_since_update == gap


def test_same_scene_at_five_times_the_resolution_tracks_the_same() -> None:
    """No pixel constant decides anything: a scene scaled 5x gives the same tracks, scaled.

    (A uniform scale of every noise term leaves a Kalman filter's estimate unchanged, so this
    guards against pixel thresholds creeping in, e.g. a fixed gate or minimum size.)
    """
    results = {}
    for scale in (1.0, 5.0):
        tracker = BoxTracker()
        rng = np.random.default_rng(7)
        for frame in range(20):
            wobble = rng.normal(0.0, 1.5, 4)  # detector jitter, in small-scene pixels
            tracker.predict()
            dets = np.stack([box(60 + 7 * frame, 80, 40, 80) + wobble, box(300, 90 - 2 * frame)])
            tracker.update(dets * scale, np.array([0.9, 0.8]))
        for _ in range(3):
            posed = tracker.predict()
        results[scale] = np.stack([t.box for t in posed]).astype(np.float64)
    np.testing.assert_allclose(results[5.0], 5.0 * results[1.0], rtol=1e-4, atol=1e-2)


def test_kalman_box_never_gets_negative_size() -> None:
    kalman = BoxKalman(box(100, 100, 60, 120))
    for size in (50.0, 40.0, 30.0, 20.0, 10.0):  # shrinking fast
        kalman.predict()
        kalman.update(box(100, 100, size, 2 * size))
    for _ in range(30):  # coast on the shrinking velocity
        x1, y1, x2, y2 = kalman.predict()
        assert x2 - x1 >= 1.0 and y2 - y1 >= 1.0
    assert np.all(np.isfinite(kalman.box))


def test_track_dies_after_max_age_missed_detector_frames() -> None:
    config = TrackerConfig(max_age=4)
    tracker = BoxTracker(config)
    for _ in range(3):
        step(tracker, [box(200, 200)])
    (track_id,) = [t.track_id for t in tracker.tracks]

    # Frames without a detector run never age a track out, however many.
    for _ in range(50):
        assert [t.track_id for t in tracker.predict()] == [track_id]
    for missed in range(1, config.max_age + 1):
        posed = step(tracker, [])
        assert posed == []  # a track that missed is kept, but no longer posed
        assert [t.track_id for t in tracker.tracks] == [track_id], missed
    step(tracker, [])
    assert tracker.tracks == []


def test_lost_track_recovers_its_id_and_new_people_get_new_ids() -> None:
    tracker = BoxTracker(TrackerConfig(max_age=3))
    for frame in range(5):
        step(tracker, [box(100 + 5 * frame, 200)])
    step(tracker, [])  # occluded for two detector frames
    step(tracker, [])
    (recovered,) = step(tracker, [box(140, 200)])
    assert recovered.track_id == 1 and recovered.det_index == 0

    for _ in range(4):  # now gone for good
        step(tracker, [])
    assert tracker.tracks == []
    step(tracker, [box(140, 200)])  # someone at the very same spot: a new person, a new id
    (newcomer,) = step(tracker, [box(140, 200)])
    assert newcomer.track_id == 2

    tracker.reset()
    (first,) = step(tracker, [box(10, 10)])
    assert first.track_id == 1


def test_hungarian_finds_the_global_optimum_where_greedy_fails() -> None:
    track_a, track_b = box(5, 5, 10, 10), box(9, 5, 10, 10)
    det_1, det_2 = box(6, 5, 10, 10), box(3, 5, 10, 10)
    iou = iou_matrix(np.stack([track_a, track_b]), np.stack([det_1, det_2]))
    # A likes det_1 best, but det_2 is only acceptable to A (B-det_2 is below 0.3).
    assert iou[0, 0] > iou[0, 1] > 0.3 and iou[1, 0] > 0.3 > iou[1, 1]

    # What a greedy best-pair-first matcher would do: take A-det_1, leaving B with nothing.
    greedy = []
    gain = np.where(iou >= 0.3, iou, 0.0)
    while gain.max() > 0:
        r, c = np.unravel_index(gain.argmax(), gain.shape)
        greedy.append((int(r), int(c)))
        gain[r, :] = 0
        gain[:, c] = 0
    assert greedy == [(0, 0)]

    matches, lost, new = associate(np.stack([track_a, track_b]), np.stack([det_1, det_2]), 0.3)
    assert sorted(matches) == [(0, 1), (1, 0)] and lost == [] and new == []

    tracker = BoxTracker()
    step(tracker, [track_a, track_b])  # ids 1 (A) and 2 (B), confirmed at stream start
    posed = step(tracker, [det_1, det_2])
    assert ids_by_detection(posed) == {0: 2, 1: 1}
    assert max(t.track_id for t in tracker.tracks) == 2  # nobody was born


def test_refine_pulls_the_box_softly_and_is_not_a_detection() -> None:
    tracker = BoxTracker()
    for _ in range(5):
        step(tracker, [box(300, 300)])
    before = tracker.tracks[0]
    target = box(320, 300)
    assert tracker.refine(before.track_id, target)
    after = tracker.tracks[0]
    shift = float(after.box[0] - before.box[0])
    assert 1.0 < shift < 20.0 * 0.5, shift  # moves toward the pose box, less than halfway
    assert abs(float(after.box[1] - before.box[1])) < 1e-3
    assert (after.hits, after.time_since_update) == (before.hits, before.time_since_update)
    assert tracker.refine(999, target) is False


def test_empty_frames_and_empty_tracker() -> None:
    tracker = BoxTracker()
    assert tracker.predict() == []
    assert tracker.update(np.zeros((0, 4)), np.zeros(0)) == []
    assert tracker.needs_detection
    tracker.predict()
    assert tracker.update(np.array([]), np.array([])) == []
    with pytest.raises(ValueError, match="shape"):
        tracker.predict()
        tracker.update(np.zeros((2, 5)), np.zeros(2))
    assert tracker.update(np.zeros((0, 4)), np.zeros(0)) == []  # a bad call used up nothing
    with pytest.raises(RuntimeError, match="twice"):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    matches, lost, new = associate(np.zeros((0, 4)), np.stack([box(1, 1)]), 0.3)
    assert (matches, lost, new) == ([], [], [0])


def test_low_scores_extend_tracks_but_never_start_one() -> None:
    tracker = BoxTracker(TrackerConfig(det_score_min=0.5))
    assert step(tracker, [box(100, 100)], [0.3]) == []
    assert tracker.tracks == []
    step(tracker, [box(100, 100)], [0.8])
    step(tracker, [box(100, 100)], [0.8])
    (kept,) = step(tracker, [box(102, 100)], [0.3])
    # The weak detection kept track 1 going; it did not start a new one.
    assert kept.track_id == 1 and kept.score == pytest.approx(0.3)


def test_one_frame_false_positive_is_never_posed_after_startup() -> None:
    tracker = BoxTracker(TrackerConfig(min_hits=2))
    for _ in range(3):
        step(tracker, [box(100, 100)])
    posed = step(tracker, [box(100, 100), box(500, 100)])
    assert [t.track_id for t in posed] == [1]
    assert tracker.needs_detection  # the tentative newcomer wants a second look
    step(tracker, [box(100, 100)])
    assert [t.track_id for t in tracker.tracks] == [1]  # the blip is gone
    assert not tracker.needs_detection


def test_track_list_stays_bounded_over_10k_frames_of_births_and_deaths() -> None:
    config = TrackerConfig(max_age=3)
    tracker = BoxTracker(config)
    peak = 0
    for frame in range(10_000):
        person = frame // 5  # a new person every 5 frames, each in a fresh spot
        step(tracker, [box(100 + 60 * (person % 10), 100 + 100 * (person % 7))])
        peak = max(peak, len(tracker.tracks))
    assert peak <= config.max_age + 2
    assert tracker.tracks[-1].track_id == 2_000  # ids kept increasing, one per person


def test_tracker_pickles_mid_stream() -> None:
    tracker = BoxTracker()
    for frame in range(6):
        step(tracker, [box(100 + 4 * frame, 200), box(400, 200 - 3 * frame)])
    clone = pickle.loads(pickle.dumps(tracker))
    a = step(tracker, [box(124, 200), box(400, 182)])
    b = step(clone, [box(124, 200), box(400, 182)])
    assert [t.track_id for t in a] == [t.track_id for t in b]
    np.testing.assert_array_equal(np.stack([t.box for t in a]), np.stack([t.box for t in b]))


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="iou_threshold"):
        TrackerConfig(iou_threshold=0.0)
    with pytest.raises(ConfigError, match="min_hits"):
        TrackerConfig(min_hits=0)
    with pytest.raises(ConfigError, match="interval"):
        DetectionSchedule(0)


# --------------------------------------------------------------------------- schedule


def test_schedule_runs_every_kth_frame() -> None:
    schedule = DetectionSchedule(3)
    assert [i for i in range(10) if schedule.should_detect(i)] == [0, 3, 6, 9]


def test_schedule_detects_at_once_on_request_and_restarts_the_cadence() -> None:
    schedule = DetectionSchedule(3)
    assert schedule.should_detect(0)
    assert not schedule.should_detect(1)
    schedule.request_detection()
    assert schedule.should_detect(2)
    assert [i for i in range(3, 9) if schedule.should_detect(i)] == [5, 8]


def test_schedule_counts_frame_indices_across_dropped_frames_and_restarts() -> None:
    schedule = DetectionSchedule(4)
    assert schedule.should_detect(0)
    assert schedule.should_detect(7)  # live source dropped frames 1..6
    assert not schedule.should_detect(8)
    assert schedule.should_detect(0)  # indices went back: a restarted source


# --------------------------------------------------------------------------- real detections


def _vtest_detections() -> list[tuple[np.ndarray, np.ndarray]]:
    if not VTEST_REFERENCE.is_file():
        pytest.skip(f"PaddleX reference detections not found at {VTEST_REFERENCE}")
    frames = json.loads(VTEST_REFERENCE.read_text())["frames"]
    return [
        (
            np.array([p["bbox"] for p in f["persons"]], dtype=np.float64).reshape(-1, 4),
            np.array([p["det_score"] for p in f["persons"]], dtype=np.float64),
        )
        for f in frames
    ]


def _track_vtest(detections, detect_on) -> dict[str, float]:
    """Run the tracker over vtest; ``detect_on(frame, tracker)`` says whether the detector runs.

    Scores every posed box against PaddleX's per-frame boxes on the same frame: a person's
    identity is taken to continue from the previous frame's box it overlaps by IoU > 0.5, and
    an id switch is a person whose posed id differs from the previous frame's.
    """
    tracker = BoxTracker()
    ids: set[int] = set()
    previous: tuple[np.ndarray, list[int | None]] | None = None
    switches = covered = detector_frames = 0
    predicted_iou: list[float] = []
    held_iou: list[float] = []
    held: dict[int, np.ndarray] = {}  # last detection box per track: the no-motion baseline
    for index, (boxes, scores) in enumerate(detections):
        tracks = tracker.predict()
        ran = detect_on(index, tracker)
        if ran:
            detector_frames += 1
            tracks = tracker.update(boxes, scores)
            held.update({t.track_id: boxes[t.det_index] for t in tracks})
        ids.update(t.track_id for t in tracks)
        current: list[int | None] = [None] * len(boxes)
        if tracks and len(boxes):
            track_boxes = np.stack([t.box for t in tracks])
            iou = iou_matrix(boxes, track_boxes)
            if not ran:
                predicted_iou += iou.max(axis=0).tolist()
                hold = np.stack([held[t.track_id] for t in tracks])
                held_iou += iou_matrix(hold, boxes).max(axis=1).tolist()
            for row in range(len(boxes)):
                if iou[row].max() > 0.5:
                    covered += 1
                    current[row] = tracks[int(iou[row].argmax())].track_id
        if previous is not None and len(boxes) and len(previous[0]):
            continuity = iou_matrix(boxes, previous[0])
            for row, track_id in enumerate(current):
                before = int(continuity[row].argmax())
                if continuity[row, before] > 0.5 and track_id is not None:
                    earlier = previous[1][before]
                    switches += earlier is not None and earlier != track_id
        previous = (boxes, current)
    persons = sum(len(b) for b, _ in detections)
    return {
        "ids": len(ids),
        "switches": switches,
        "coverage": covered / persons,
        "predicted_iou": float(np.mean(predicted_iou)) if predicted_iou else float("nan"),
        "held_iou": float(np.mean(held_iou)) if held_iou else float("nan"),
        "detector_share": detector_frames / len(detections),
        "persons": persons,
    }


def test_vtest_every_frame_gives_few_ids_and_switches() -> None:
    detections = _vtest_detections()
    stats = _track_vtest(detections, lambda index, tracker: True)
    print(f"\nvtest, detector every frame: {stats}")
    # Measured: 56 ids for 4486 person-boxes over 795 frames (5.6 people per frame), so an id
    # lasts 80 frames (8 s: about one walk across the view); 23 switches (0.5 % of boxes),
    # mostly where PaddleX itself merges or splits people walking side by side; coverage 0.986
    # (the rest: one-frame detections that min_hits holds back). Without tracking there would
    # be one id per box.
    assert stats["ids"] <= 70
    assert stats["switches"] <= 40
    assert stats["coverage"] >= 0.97


def test_vtest_every_third_frame_tracks_persist_and_predictions_follow() -> None:
    detections = _vtest_detections()
    stats = _track_vtest(detections, lambda index, tracker: index % 3 == 0)
    print(f"\nvtest, detector every 3rd frame: {stats}")
    # Measured: 55 ids (as many as with every frame: tracks survive the gaps), predicted
    # boxes' mean IoU with PaddleX's boxes of the same frame 0.766, against 0.675 for holding
    # the last detection still; coverage 0.86 (newcomers wait for a second detector frame).
    assert stats["ids"] <= 70
    assert stats["predicted_iou"] >= 0.73
    assert stats["predicted_iou"] >= stats["held_iou"] + 0.05
    assert stats["coverage"] >= 0.82


def test_vtest_schedule_with_on_demand_detection() -> None:
    detections = _vtest_detections()
    schedule = DetectionSchedule(3)

    def detect_on(index: int, tracker: BoxTracker) -> bool:
        if tracker.needs_detection and index > 0:
            schedule.request_detection()
        return schedule.should_detect(index)

    stats = _track_vtest(detections, detect_on)
    print(f"\nvtest, every 3rd frame + on demand: {stats}")
    # Measured: the detector ran on 46 % of frames and 95 % of PaddleX's boxes were covered
    # (86 % at a fixed every-3rd cadence, 99 % detecting every frame), with 69 ids.
    assert stats["detector_share"] <= 0.55
    assert stats["coverage"] >= 0.92
    assert stats["ids"] <= 85
