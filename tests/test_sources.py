"""Frame sources on real media: files, damaged files, lavfi, images, HTTP, and input errors."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from streampose.errors import ConfigError, InputError
from streampose.sources import (
    ImageSequenceSource,
    LavfiSource,
    VideoFileSource,
    list_video_files,
    names_live_source,
    open_source,
)
from streampose.sources.base import redact_url

VTEST_FRAMES = 795
VTEST_SIZE = (768, 576)


def digest(image: np.ndarray) -> str:
    return hashlib.md5(image.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def vtest(samples_dir: Path) -> Path:
    return samples_dir / "vtest.avi"


@pytest.fixture(scope="module")
def vtest_decoded(vtest: Path) -> dict[str, object]:
    """One full decode of vtest.avi: per-frame digests, pts, and what the source reported."""
    with open_source(vtest) as source:
        info = {"fps": source.fps, "frame_count": source.frame_count, "size": source.size,
                "rate": source.stream_info.rate, "is_live": source.is_live}
        digests, pts, indices, shapes, contiguous = [], [], [], set(), True
        for frame in source:
            digests.append(digest(frame.image))
            pts.append(frame.pts)
            indices.append(frame.index)
            shapes.add((frame.image.shape, frame.image.dtype.str))
            contiguous &= frame.image.flags["C_CONTIGUOUS"]
        info.update(digests=digests, pts=pts, indices=indices, shapes=shapes, contiguous=contiguous,
                    decode_error=source.decode_error, stats=source.stats.as_dict(),
                    source_id=frame.source_id)
    return info


def test_video_file_delivers_every_frame_with_its_timing(vtest_decoded, vtest):
    info = vtest_decoded
    assert info["frame_count"] == VTEST_FRAMES
    assert len(info["digests"]) == VTEST_FRAMES
    assert info["indices"] == list(range(VTEST_FRAMES))
    assert info["size"] == VTEST_SIZE
    assert info["shapes"] == {((576, 768, 3), "|u1")}
    assert info["contiguous"]
    assert info["fps"] == 10.0 and info["rate"] == 10
    assert info["is_live"] is False
    assert info["pts"] == pytest.approx([i / 10 for i in range(VTEST_FRAMES)])
    assert all(b > a for a, b in zip(info["pts"], info["pts"][1:]))
    assert info["decode_error"] is None
    assert info["stats"]["frames_read"] == VTEST_FRAMES
    assert info["source_id"] == str(vtest)
    # Real pictures, not one frame repeated: pedestrians move.
    assert len(set(info["digests"])) > VTEST_FRAMES * 0.9


def test_avi_with_b_frames_gets_evenly_increasing_times(samples_dir):
    # AVI has no presentation times; FFmpeg's pts there come out swapped around B-frames.
    with open_source(samples_dir / "Megamind.avi") as source:
        rate = source.stream_info.rate
        pts = [frame.pts for frame in source]
    assert len(pts) == 270 and rate == pytest.approx(23.976, abs=1e-3)
    steps = np.diff(pts)
    assert np.allclose(steps, 1 / float(rate), rtol=1e-6)


def test_truncated_file_yields_its_good_prefix_and_says_why(vtest, vtest_decoded, tmp_path):
    data = vtest.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: int(len(data) * 0.4)])
    with open_source(truncated) as source:
        digests = [digest(frame.image) for frame in source]
        error = source.decode_error
    assert 100 < len(digests) < VTEST_FRAMES
    # The last packet is cut short, so its picture is only partly right: compare the rest.
    assert digests[:-1] == vtest_decoded["digests"][: len(digests) - 1]
    assert error is not None and f"after {len(digests)} of the {VTEST_FRAMES} frames" in error


def test_garbage_inside_a_file_costs_frames_not_the_run(vtest, tmp_path):
    data = bytearray(vtest.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 200_000] = np.random.default_rng(0).integers(0, 256, 200_000, np.uint8).tobytes()
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with open_source(damaged) as source:
        count = sum(1 for _ in source)
        assert source.decode_error is not None
    assert VTEST_FRAMES // 2 < count < VTEST_FRAMES


@pytest.mark.parametrize(
    ("name", "content", "cause"),
    [
        ("missing.mp4", None, "no such file"),
        ("notes.mp4", b"these are not video bytes\n" * 40, "not a video"),
        ("empty.mp4", b"", "empty"),
    ],
)
def test_unusable_video_files_raise_one_line_input_errors(tmp_path, name, content, cause):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        open_source(path)
    message = str(raised.value)
    assert str(path) in message and cause in message
    assert "\n" not in message


def test_an_image_without_video_stream_is_read_as_an_image_not_a_video(samples_dir):
    with open_source(samples_dir / "messi5.jpg") as source:
        assert isinstance(source, ImageSequenceSource)
        frames = list(source)
    assert len(frames) == 1 and frames[0].image.shape == (342, 548, 3)


def test_audio_only_file_is_rejected_as_having_no_video(tmp_path):
    import av

    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream") as raised:
        VideoFileSource(path)
    assert str(path) in str(raised.value)


def test_missing_webcam_names_the_device():
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a camera at /dev/video0")
    for spec in ("/dev/video0", 0, "0"):
        with pytest.raises(InputError, match="/dev/video0") as raised:
            open_source(spec)
        assert "no such device" in str(raised.value)


def test_file_urls_and_unknown_schemes_are_rejected(vtest):
    with pytest.raises(InputError, match="file:// URLs are not supported"):
        open_source(f"file://{vtest}")
    with pytest.raises(InputError, match="unsupported URL scheme"):
        open_source("srt://127.0.0.1:9000")


def test_fps_cannot_silently_retime_a_video(vtest):
    with pytest.raises(ConfigError, match="fps=5"):
        open_source(vtest, fps=5)


def test_lavfi_source_paced_like_a_camera():
    with open_source("lavfi:testsrc2=size=320x240:rate=25") as source:
        assert isinstance(source, LavfiSource) and source.is_live
        assert source.size == (320, 240) and source.fps == 25.0 and source.frame_count is None
        started = time.monotonic()
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 10:
                break
        elapsed = time.monotonic() - started
    assert [frame.index for frame in frames] == list(range(10))
    assert all(frame.image.shape == (240, 320, 3) for frame in frames)
    assert [frame.pts for frame in frames] == pytest.approx([i / 25 for i in range(10)])
    assert elapsed >= 9 / 25 * 0.9  # real-time pacing, not as fast as the CPU can draw
    assert digest(frames[0].image) != digest(frames[5].image)


def test_names_live_source_tells_cameras_and_streams_from_files_without_opening_them(vtest, samples_dir):
    """The graph prepares its models before a camera starts streaming, so it must know a live
    input from its name; the answer must agree with what open_source then opens."""
    live = [0, 3, "0", " 1 ", "/dev/video0", "lavfi:testsrc2=size=64x48", "rtsp://cam/1", "RTSPS://cam/1"]
    not_live = [True, "", "video.mp4", "http://host/video.mp4", "photos/", "frames_*.jpg", 2.5, None]
    assert [names_live_source(spec) for spec in live] == [True] * len(live)
    assert [names_live_source(spec) for spec in not_live] == [False] * len(not_live)
    for spec in ("lavfi:testsrc2=size=64x48:rate=50", vtest, str(vtest), samples_dir):
        with open_source(spec) as source:
            assert source.is_live == names_live_source(spec), spec


def test_lavfi_with_a_duration_ends_like_a_file():
    source = LavfiSource("lavfi:testsrc2=size=64x48:rate=50:duration=1", realtime=False)
    with source:
        frames = list(source)
    assert len(frames) == 50
    assert source.decode_error is None and source.stats.reconnects == 0


def test_stop_from_another_thread_ends_a_live_iteration_promptly():
    source = open_source("lavfi:testsrc2=size=160x120:rate=25")
    stopper = threading.Timer(0.3, source.stop)
    stopper.start()
    started = time.monotonic()
    count = sum(1 for _ in source)
    elapsed = time.monotonic() - started
    source.close()
    assert 1 <= count < 25
    assert elapsed < 1.0


def _write_png(path: Path, value: int) -> None:
    image = np.full((30, 40, 3), value, np.uint8)
    assert cv2.imwrite(str(path), image)


def test_image_folder_plays_in_natural_order_and_skips_unreadable_files(tmp_path):
    for number, value in ((10, 30), (2, 20), (1, 10)):
        _write_png(tmp_path / f"img{number}.png", value)
    (tmp_path / "img5.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(tmp_path, fps=5) as source:
        assert source.frame_count == 4 and source.fps == 5.0 and source.size == (40, 30)
        frames = list(source)
        assert source.stats.decode_errors == 1
        assert "img5.png" in (source.decode_error or "")
    assert [int(frame.image[0, 0, 0]) for frame in frames] == [10, 20, 30]
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert [frame.pts for frame in frames] == pytest.approx([0.0, 0.2, 0.4])


def test_image_glob_and_empty_folder(tmp_path):
    for number in range(3):
        _write_png(tmp_path / f"a{number}.png", number)
    _write_png(tmp_path / "b0.png", 99)
    with open_source(str(tmp_path / "a*.png")) as source:
        assert [int(frame.image[0, 0, 0]) for frame in source] == [0, 1, 2]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_source(empty)


def test_list_video_files_sorted_and_filtered(tmp_path):
    for name in ("b.MP4", "a.avi", "c.mkv", "notes.txt", "d.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.mov").write_bytes(b"x")
    assert [p.name for p in list_video_files(tmp_path)] == ["a.avi", "b.MP4", "c.mkv"]
    assert [p.name for p in list_video_files(tmp_path, recursive=True)][-1] == "e.mov"
    with pytest.raises(InputError, match="folder of videos"):
        open_source(tmp_path / "sub")
    with pytest.raises(InputError, match="not a folder"):
        list_video_files(tmp_path / "a.avi")


def test_http_video_url_decodes_the_same_frames(samples_http, vtest_decoded):
    with open_source(f"{samples_http}/vtest.avi") as source:
        assert not source.is_live and source.size == VTEST_SIZE
        digests = []
        for frame in source:
            digests.append(digest(frame.image))
            if len(digests) == 20:
                break
    assert digests == vtest_decoded["digests"][:20]


def test_http_404_is_an_input_error(samples_http):
    with pytest.raises(InputError, match="404") as raised:
        open_source(f"{samples_http}/nothing.mp4")
    assert "nothing.mp4" in str(raised.value)


def test_credentials_never_reach_ids_or_messages():
    assert redact_url("rtsp://admin:secret@10.0.0.5:554/stream") == "rtsp://10.0.0.5:554/stream"
    with pytest.raises(InputError) as raised:
        open_source("rtsp://admin:secret@127.0.0.1:9/live", timeout_s=1.0)
    assert "secret" not in str(raised.value) and "127.0.0.1:9" in str(raised.value)


def test_permission_denied_is_named(tmp_path, vtest):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    locked = tmp_path / "locked.avi"
    locked.write_bytes(vtest.read_bytes()[:1000])
    locked.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        open_source(locked)
