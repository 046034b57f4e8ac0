"""``streampose bench-streams``: concurrent streams through one shared pipeline.

The figure it reports (how many cameras one machine keeps up with) is only worth something if
the streams really are independent and every frame is accounted for, so that is what is tested
here, on real media. Speed figures are not asserted (a loaded machine changes them).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streampose.bench_streams import StreamLimits, judge_stream, run_streams, split_streams
from test_graph import CLIP_FRAMES, clip, pipeline, wait_for_no_graph_threads  # noqa: F401 - fixtures

LIMITS = StreamLimits(max_drop_rate=0.01, max_p95_ms=150.0)


def summary(frames: int = 300, dropped: int = 0, p95: float = 40.0, seconds: float = 10.0) -> dict:
    return {"frames": frames, "dropped": dropped, "seconds": seconds, "latency": {"p95_ms": p95}}


def test_a_stream_keeps_up_only_within_every_limit():
    assert judge_stream(summary(), 30.0, LIMITS) == []
    # 3 of 300 offered frames is exactly 1 %: still within; 4 is not.
    assert judge_stream(summary(frames=297, dropped=3), 30.0, LIMITS) == []
    assert judge_stream(summary(frames=296, dropped=4), 30.0, LIMITS) == ["drops 1.3% > 1%"]
    assert judge_stream(summary(p95=151.0), 30.0, LIMITS) == ["p95 151 ms > 150 ms"]
    # No drops and low latency, but the source itself only managed 20 of 30 fps: behind.
    (reason,) = judge_stream(summary(frames=300, seconds=15.0), 30.0, LIMITS)
    assert reason.startswith("source at 20.0 of 30 fps")
    assert len(judge_stream(summary(frames=200, dropped=100, p95=900.0, seconds=15.0), 30.0, LIMITS)) == 3
    # Files have no rate to keep up with.
    assert judge_stream(summary(frames=100, dropped=0, p95=5000.0, seconds=60.0), None, LIMITS) == []


def test_streams_are_split_evenly_over_the_processes():
    assert split_streams(1, 4) == [1]
    assert split_streams(7, 3) == [3, 2, 2]
    assert split_streams(32, 4) == [8, 8, 8, 8]
    assert sum(split_streams(33, 4)) == 33


def test_streams_sharing_one_pipeline_give_each_the_results_of_a_lone_run(pipeline, clip, tmp_path):  # noqa: F811
    """Three graphs call the same detector and pose sessions at once: no frame, track id or
    keypoint may leak from one stream into another, or depend on the others' timing."""
    def collect(count: int) -> tuple[dict, list[list[tuple]]]:
        found: list[list[tuple]] = [[] for _ in range(count)]

        def on_frame(stream: int, output) -> None:
            found[stream].append((output.frame.index, [person.track_id for person in output.persons],
                                  [person.keypoints.copy() for person in output.persons]))

        report = run_streams(pipeline, str(clip), count, None, 3, LIMITS, tmp_path, on_frame=on_frame)
        return report, found

    _, (alone,) = collect(1)
    report, together = collect(3)
    assert [stream["frames"] for stream in report["per_stream"]] == [CLIP_FRAMES] * 3
    assert all(stream["dropped"] == 0 for stream in report["per_stream"])  # files lose nothing
    assert report["total_fps"] > report["min_stream_fps"]
    assert sum(len(ids) for _, ids, _ in alone) > 2 * CLIP_FRAMES
    for stream in together:
        assert [index for index, _, _ in stream] == list(range(CLIP_FRAMES))
        assert [ids for _, ids, _ in stream] == [ids for _, ids, _ in alone]
        for (_, _, ours), (_, _, lone) in zip(stream, alone):
            for person, reference in zip(ours, lone):
                np.testing.assert_allclose(person, reference, atol=1e-3)
    assert wait_for_no_graph_threads() == []


def run_cli(clip, tmp_path, name: str, *flags: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    report_path = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", "streampose.cli", "bench-streams", "--video", str(clip),
               "--fps", "10", "--json", str(report_path), *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return done, report


def test_cli_plays_each_stream_at_its_rate_and_accounts_for_every_frame(clip, tmp_path, model_home):  # noqa: F811
    """Two worker processes, each with its own models: the streams of a count are split over them."""
    done, report = run_cli(clip, tmp_path, "loose", "--streams", "2", "1", "--processes", "2",
                           "--max-p95-ms", "100000", "--max-drop-rate", "1")
    assert done.returncode == 0, done.stderr
    assert report["processes"] == 2
    assert [run["streams"] for run in report["runs"]] == [1, 2]  # tried in ascending order
    assert [run["processes"] for run in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert run["source_fps"] == 10
        assert len(run["per_stream"]) == run["streams"]
        for stream in run["per_stream"]:
            assert stream["frames"] + stream["dropped"] == CLIP_FRAMES
            assert stream["persons_per_frame"] > 2
            # Played like a camera: 40 frames at 10 fps take about 4 s, not the ~1 s of a file run.
            assert stream["seconds"] > 0.9 * CLIP_FRAMES / 10
            assert 9.0 < stream["source_fps"] <= 10.5  # measured between frames, never faster
            assert stream["posed_fps"] == pytest.approx(stream["source_fps"] * stream["frames"] / CLIP_FRAMES,
                                                        rel=0.1)
            assert stream["kept_up"] == (stream["why_not"] == [])
    assert report["max_streams_kept_up"] == max(run["streams"] for run in report["runs"] if run["kept_up"])
    assert "bench-streams" in done.stderr and "kept up with" in done.stderr


def test_cli_stops_at_the_first_count_that_does_not_keep_up(clip, tmp_path, model_home):  # noqa: F811
    done, report = run_cli(clip, tmp_path, "strict", "--streams", "1", "2", "--max-p95-ms", "0.001")
    assert done.returncode == 0, done.stderr
    assert [run["streams"] for run in report["runs"]] == [1]  # 2 was never tried
    (stream,) = report["runs"][0]["per_stream"]
    assert not stream["kept_up"] and any(reason.startswith("p95") for reason in stream["why_not"])
    assert report["max_streams_kept_up"] == 0
    assert "kept up with 0 stream(s)" in done.stderr


@pytest.mark.parametrize("flags, message", [
    (["--video", "missing.mp4"], "video missing.mp4: no such file"),
    (["--fps", "-5"], "--fps -5 must be 0"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, flags, message):
    command = [sys.executable, "-m", "streampose.cli", "bench-streams", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_a_file_that_is_not_a_video_fails_in_its_worker_with_one_line(tmp_path):
    """The video is opened inside the worker processes: their error must reach the user as the
    same one line a lone `streampose run` gives, not as a dead process or a traceback."""
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n")
    command = [sys.executable, "-m", "streampose.cli", "bench-streams", "--video", str(fake),
               "--streams", "1", "--fps", "10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"cannot open video {fake}" in done.stderr
    assert "Traceback" not in done.stderr
