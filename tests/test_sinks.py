"""Sinks: encoded video checked by decoding it back, atomic files, JSON Lines, headless window."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streampose.errors import ConfigError, DeviceError, InputError
from streampose.sinks import JsonLinesWriter, ScreenWindow, VideoWriter, partial_path_for
from streampose.sinks.video import as_rate
from streampose.sources import Frame, open_source


@pytest.fixture(scope="module")
def vtest_frames(samples_dir: Path) -> list[Frame]:
    """The first 60 frames of vtest.avi (about 80 MB of pixels, kept for the module)."""
    with open_source(samples_dir / "vtest.avi") as source:
        return list(itertools.islice(source, 60))


def decode_back(path: Path) -> tuple[av.video.stream.VideoStream, list[av.VideoFrame], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return stream, frames, container.format.name


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(error, 1e-12)))


def test_h264_file_keeps_count_size_rate_and_picture(vtest_frames, tmp_path):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 10, (768, 576)) as writer:
        assert writer.codec == "libx264"
        for frame in vtest_frames:
            writer.write(frame.image, frame.pts)
    assert out.exists() and not partial_path_for(out).exists()
    stream, frames, muxer = decode_back(out)
    assert "mp4" in muxer
    assert stream.codec_context.name == "h264"
    assert len(frames) == len(vtest_frames) == 60
    assert (stream.width, stream.height) == (768, 576)
    assert stream.average_rate == 10
    pts_seconds = [float(frame.pts * frame.time_base) for frame in frames]
    assert pts_seconds == pytest.approx([i / 10 for i in range(60)])
    for index in (0, 30, 59):
        decoded = frames[index].to_ndarray(format="bgr24")
        assert psnr(decoded, vtest_frames[index].image) > 30


def x264_settings(path: Path) -> str:
    """The option string x264 writes into the stream (an SEI message: "x264 - core ... options: ...")."""
    data = path.read_bytes()
    start = data.index(b"options: ")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def test_default_preset_is_veryfast_with_cheaper_motion_search_and_explicit_presets_are_kept(
        vtest_frames, tmp_path):
    """The default trades subme 2 for 1 and hexagon for diamond search (measured: less encoder
    CPU for the same size and PSNR within 0.1 dB); an explicit preset is x264's own."""
    default, explicit = tmp_path / "default.mp4", tmp_path / "explicit.mp4"
    for path, preset in ((default, None), (explicit, "veryfast")):
        with VideoWriter(path, 10, (768, 576), preset=preset) as writer:
            for frame in vtest_frames[:10]:
                writer.write(frame.image, frame.pts)
    default_options, explicit_options = x264_settings(default).split(), x264_settings(explicit).split()
    assert {"subme=1", "me=dia"} <= set(default_options)
    assert {"subme=2", "me=hex"} <= set(explicit_options)
    # Otherwise the same encoder settings: veryfast's reference frames, threads and rate control.
    differing = set(default_options) ^ set(explicit_options)
    assert {option.split("=")[0] for option in differing} == {"subme", "me"}
    _, frames, _ = decode_back(default)
    assert psnr(frames[5].to_ndarray(format="bgr24"), vtest_frames[5].image) > 30


def test_frames_without_timestamps_are_timed_by_index_at_rational_rates(vtest_frames, tmp_path):
    out = tmp_path / "ntsc.mp4"
    with VideoWriter(out, 29.97, (768, 576), preset="ultrafast") as writer:
        assert writer.rate == Fraction(30000, 1001)
        for frame in vtest_frames[:12]:
            writer.write(frame.image)
    stream, frames, _ = decode_back(out)
    assert len(frames) == 12
    assert stream.average_rate == Fraction(30000, 1001)


def test_jittery_or_repeated_timestamps_still_increase(vtest_frames, tmp_path):
    out = tmp_path / "live.mp4"
    live_pts = [0.0, 0.11, 0.19, 0.19, 0.42, 0.35, 5.0, 5.1]  # jitter, a repeat, a step back, a gap
    with VideoWriter(out, 10, (768, 576), preset="ultrafast") as writer:
        for frame, pts in zip(vtest_frames, live_pts):
            writer.write(frame.image, pts + 100.0)  # a live clock that does not start at 0
    _, frames, _ = decode_back(out)
    seconds = [float(frame.pts * frame.time_base) for frame in frames]
    assert len(seconds) == len(live_pts)
    assert seconds[0] == 0.0
    assert all(b > a for a, b in zip(seconds, seconds[1:]))
    assert seconds[-1] == pytest.approx(5.1)  # the outage gap is kept


def test_odd_size_is_padded_to_even_without_losing_pixels(vtest_frames, tmp_path):
    crops = [np.ascontiguousarray(frame.image[100:175, 200:301]) for frame in vtest_frames[:10]]
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 10, (101, 75)) as writer:
        assert writer.size == (102, 76)
        for crop in crops:
            writer.write(crop)
    stream, frames, _ = decode_back(out)
    assert (stream.width, stream.height) == (102, 76) and len(frames) == 10
    decoded = frames[5].to_ndarray(format="bgr24")
    assert psnr(decoded[:75, :101], crops[5]) > 28


def test_mpeg4_encoder_and_unknown_codec(vtest_frames, tmp_path):
    out = tmp_path / "fallback.mp4"
    with VideoWriter(out, 10, (768, 576), codec="mpeg4") as writer:
        for frame in vtest_frames[:5]:
            writer.write(frame.image)
    stream, frames, _ = decode_back(out)
    assert stream.codec_context.name == "mpeg4" and len(frames) == 5
    assert psnr(frames[2].to_ndarray(format="bgr24"), vtest_frames[2].image) > 30
    with pytest.raises(ConfigError, match="no-such-codec"):
        VideoWriter(tmp_path / "x.mp4", 10, (64, 48), codec="no-such-codec")


def test_output_appears_only_on_close(vtest_frames, tmp_path):
    out = tmp_path / "atomic.mkv"
    writer = VideoWriter(out, 10, (768, 576), preset="ultrafast")
    partial = tmp_path / "atomic.partial.mkv"
    assert writer.partial_path == partial
    for frame in vtest_frames[:5]:
        writer.write(frame.image)
    assert partial.exists() and not out.exists()
    writer.close()
    assert out.exists() and not partial.exists()
    assert len(decode_back(out)[1]) == 5
    writer.close()  # idempotent


def test_failed_run_leaves_neither_output_nor_partial(vtest_frames, tmp_path):
    out = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 10, (768, 576), preset="ultrafast") as writer:
            for index, frame in enumerate(vtest_frames):
                if index == 7:
                    raise RuntimeError("a stage failed")
                writer.write(frame.image)
    assert list(tmp_path.iterdir()) == []
    writer = VideoWriter(out, 10, (768, 576))
    writer.write(vtest_frames[0].image)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="already closed"):
        writer.write(vtest_frames[0].image)


def test_ctrl_c_keeps_a_valid_shorter_file(vtest_frames, tmp_path):
    out = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, 10, (768, 576), preset="ultrafast") as writer:
            for index, frame in enumerate(vtest_frames):
                if index == 9:
                    raise KeyboardInterrupt
                writer.write(frame.image)
    assert len(decode_back(out)[1]) == 9
    assert not partial_path_for(out).exists()


def test_no_frames_means_no_file(tmp_path):
    out = tmp_path / "nothing.mp4"
    VideoWriter(out, 10, (64, 48)).close()
    assert list(tmp_path.iterdir()) == []


def test_wrong_frames_and_paths_are_one_line_errors(vtest_frames, tmp_path):
    writer = VideoWriter(tmp_path / "sized.mp4", 10, (640, 480))
    with pytest.raises(InputError, match="768x576, the video is 640x480"):
        writer.write(vtest_frames[0].image)
    with pytest.raises(InputError, match="uint8"):
        writer.write(np.zeros((480, 640), np.float32))
    writer.abort()
    with pytest.raises(ConfigError, match="extension"):
        VideoWriter(tmp_path / "noext", 10, (64, 48))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write video"):
        VideoWriter(blocker / "out.mp4", 10, (64, 48))


def test_rate_parsing():
    assert as_rate(25) == 25 and as_rate(12.5) == Fraction(25, 2)
    assert as_rate(23.976) == Fraction(24000, 1001)
    assert as_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    with pytest.raises(ConfigError):
        as_rate(0)


def frame_record(index: int) -> dict[str, object]:
    keypoints = np.arange(17 * 2, dtype=np.float32).reshape(17, 2) + index
    return {
        "source": "vtest.avi",
        "frame": np.int64(index),
        "time": index / 10,
        "persons": [
            {
                "track_id": np.int32(3),
                "bbox": np.array([1.5, 2.0, 30.0, 60.0], np.float32),
                "det_score": np.float32(0.875),
                "keypoints": keypoints,
                "kpt_score": np.float64(0.5),
            }
        ],
    }


def test_json_lines_file_parses_line_by_line(tmp_path):
    out = tmp_path / "poses.jsonl"
    with JsonLinesWriter(out) as writer:
        for index in range(25):
            writer.write(frame_record(index))
        assert not out.exists() and (tmp_path / "poses.partial.jsonl").exists()
    lines = out.read_text().splitlines()
    assert len(lines) == 25
    records = [json.loads(line) for line in lines]
    assert [record["frame"] for record in records] == list(range(25))
    person = records[24]["persons"][0]
    assert person["track_id"] == 3 and person["det_score"] == 0.875
    assert person["bbox"] == [1.5, 2.0, 30.0, 60.0]
    assert person["keypoints"][0] == [24.0, 25.0] and len(person["keypoints"]) == 17
    assert ", " not in lines[0] and ": " not in lines[0]  # compact separators
    assert not (tmp_path / "poses.partial.jsonl").exists()


def test_json_lines_abort_and_stdout(tmp_path, capsys):
    out = tmp_path / "aborted.jsonl"
    with pytest.raises(ValueError):
        with JsonLinesWriter(out) as writer:
            writer.write(frame_record(0))
            raise ValueError("stage failed")
    assert list(tmp_path.iterdir()) == []
    with JsonLinesWriter("-") as writer:
        writer.write(frame_record(1))
        writer.write({"frame": 2, "persons": []})
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [1, 2]


def test_json_lines_rejects_what_json_cannot_hold(tmp_path):
    writer = JsonLinesWriter(tmp_path / "bad.jsonl")
    with pytest.raises(TypeError, match="object"):
        writer.write({"frame": object()})
    writer.abort()


def test_screen_window_without_display_fails_before_work(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DeviceError) as raised:
        ScreenWindow("preview")
    assert str(raised.value) == (
        "--show needs a display (none found: DISPLAY is not set); "
        "write a file with --output out.mp4 instead"
    )


def test_screen_window_with_a_dead_x_display(monkeypatch):
    if Path("/tmp/.X11-unix/X87").exists():
        pytest.skip("an X server runs on :87 here")
    monkeypatch.setenv("DISPLAY", ":87")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DeviceError, match="DISPLAY=:87"):
        ScreenWindow()
