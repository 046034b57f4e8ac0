"""``streampose bench``: the figures it prints must be the ones it measured.

The bench is how speed targets are checked, so its arithmetic and its comparison with PaddleX's
own output are tested here on real media; its speed figures are not asserted (a loaded machine
changes them), only their consistency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from streampose.bench import WARMUP_FRAMES, compare_with_reference, spread_frame_plan
from test_graph import write_vtest_clip

CLIP_FRAMES = 40
NAIVE_FRAMES = 8


@pytest.fixture(scope="module")
def reference_frames(reference_dir) -> list[dict]:
    return json.loads((reference_dir / "vtest.avi.json").read_text())["frames"]


def boxes_of(frames: list[dict]) -> list[np.ndarray]:
    return [np.array([person["bbox"] for person in frame["persons"]], np.float64).reshape(-1, 4)
            for frame in frames]


def test_paddlex_output_compared_with_itself_is_a_perfect_match(reference_dir, reference_frames):
    report = compare_with_reference(boxes_of(reference_frames), reference_dir / "vtest.avi.json")
    assert report["frames"] == len(reference_frames) == 795
    assert report["ratio"] == report["recall"] == report["precision"] == 1.0
    assert 5.0 < report["reference_persons_per_frame"] == report["persons_per_frame"] < 6.5


def test_missing_and_shifted_persons_lower_recall_and_precision_by_their_share(reference_dir, reference_frames):
    ours = boxes_of(reference_frames[:100])
    total = sum(len(boxes) for boxes in ours)
    dropped = sum(1 for boxes in ours if len(boxes))
    ours = [boxes[1:] for boxes in ours]  # one person missed on every frame that has any
    ours[0] = np.vstack([ours[0], [[0.0, 0.0, 10.0, 10.0]]])  # and one ghost nobody else sees
    report = compare_with_reference(ours, reference_dir / "vtest.avi.json")
    assert report["frames"] == 100  # only frames both sides have
    assert report["recall"] == pytest.approx((total - dropped) / total)
    assert report["precision"] == pytest.approx((total - dropped) / (total - dropped + 1))
    assert report["ratio"] == pytest.approx((total - dropped + 1) / total)

    # A box moved by half its width overlaps at IoU 1/3: below 0.5, so it is not the same person.
    moved = [boxes.copy() for boxes in boxes_of(reference_frames[:1])]
    moved[0][0, [0, 2]] += (moved[0][0, 2] - moved[0][0, 0]) / 2
    first = compare_with_reference(moved, reference_dir / "vtest.avi.json")
    persons = len(moved[0])
    assert first["recall"] == pytest.approx((persons - 1) / persons)


def test_baselines_are_timed_on_frames_holding_the_crowds_of_the_whole_video(reference_frames):
    """PaddleX and the naive loop pose one person per call, so the frames they are timed on must
    have the video's crowds: PaddleX's own output on vtest.avi has 4.1 persons per frame in the
    first 60 frames and 5.6 over the whole video, which made a baseline timed on the first frames
    look ~20% faster than it is there."""
    total = len(reference_frames)
    warmup, timed = spread_frame_plan(total, 60)
    assert warmup == set(range(WARMUP_FRAMES)) and not warmup & timed and len(timed) == 60
    ordered = sorted(timed)
    gaps = np.diff(ordered)
    assert ordered[0] == WARMUP_FRAMES and ordered[-1] >= total - gaps.max() - 1
    assert gaps.min() >= gaps.max() - 1  # evenly spread
    crowd = np.array([len(frame["persons"]) for frame in reference_frames], np.float64)
    whole, first = crowd.mean(), crowd[WARMUP_FRAMES:WARMUP_FRAMES + 60].mean()
    assert abs(first / whole - 1) > 0.2  # the old plan's bias, on PaddleX's own detections
    assert abs(crowd[ordered].mean() / whole - 1) < 0.05
    # Length unknown (0) or too short to spread: the frames after the warm-up, in order.
    assert spread_frame_plan(0, 5) == (warmup, set(range(WARMUP_FRAMES, WARMUP_FRAMES + 5)))
    assert spread_frame_plan(40, 60)[1] == set(range(WARMUP_FRAMES, WARMUP_FRAMES + 60))


def test_bench_cli_reports_consistent_figures_and_paddlex_agreement(model_home, samples_dir, reference_dir,
                                                                     reference_frames, tmp_path):
    clip = write_vtest_clip(samples_dir, tmp_path / "clip.mp4", CLIP_FRAMES)
    report_path = tmp_path / "bench.json"
    command = [sys.executable, "-m", "streampose.cli", "bench", "--video", str(clip), "--no-variants",
               "--baseline-frames", str(NAIVE_FRAMES), "--reference", str(reference_dir / "vtest.avi.json"),
               "--json", str(report_path)]
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=600,
                          env={**os.environ, "STREAMPOSE_MODEL_HOME": str(model_home)})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    (entry,) = report["videos"]
    graph, naive = entry["graph"], entry["naive"]
    assert graph["frames"] == CLIP_FRAMES and naive["frames"] == NAIVE_FRAMES
    # The naive loop detects every frame it times, and times the planned frames spread over the
    # clip: it finds the persons PaddleX found on those same frames (3.5 a frame; the clip's
    # first 8 frames hold 3.0).
    _, timed = spread_frame_plan(CLIP_FRAMES, NAIVE_FRAMES)
    assert naive["warmup_frames"] == WARMUP_FRAMES
    expected = np.mean([len(reference_frames[index]["persons"]) for index in sorted(timed)])
    assert naive["persons_per_frame"] == pytest.approx(expected, rel=0.05)
    assert entry["speedup_vs_naive"] == pytest.approx(graph["fps"] / naive["fps"])
    assert graph["fps"] == pytest.approx(graph["frames"] / graph["seconds"])
    assert entry["graph_warm"]["frames"] == CLIP_FRAMES  # the warm second run covers the same clip
    stages = {stage["stage"]: stage["items"] for stage in graph["stages"]}
    assert stages["pose"] == stages["sink"] == stages["render"] == stages["encode"] == CLIP_FRAMES
    # Render and encode are parts of the sink stage: together they cannot take longer than it.
    mean_ms = {stage["stage"]: stage["mean_ms"] for stage in graph["stages"]}
    assert 0 < mean_ms["render"] + mean_ms["encode"] <= mean_ms["sink"]
    assert 0 < stages["detect"] <= CLIP_FRAMES
    # The re-encoded clip is the start of vtest.avi: the graph finds PaddleX's persons.
    reference = report["reference"]
    assert reference["frames"] == CLIP_FRAMES
    assert reference["recall"] > 0.9 and reference["precision"] > 0.9
    assert abs(reference["ratio"] - 1.0) < 0.1
    cost = report["pose_cost"]
    assert cost["ms_per_extra_person"] == pytest.approx((cost["pose_ms_8"] - cost["pose_ms_1"]) / 7)
    assert report["live"]["frames"] + report["live"]["dropped"] <= CLIP_FRAMES
    assert "vs PaddleX's own output" in done.stderr
    # The stream preset's detector is f32 as configured; its pose model says how `auto` chose.
    assert report["precision"]["detector"] == "f32"
    pose_precision = report["precision"]["pose"]
    assert pose_precision.split(" ")[0] in ("f32", "bf16") and " (auto, " in pose_precision
    assert f"pose {pose_precision}" in " ".join(done.stderr.split())
