"""RTSP against a real GStreamer RTSP server on loopback: reading, reconnecting, giving up.

The server (tests/rtsp_server.py) runs under the system interpreter, which has PyGObject; the
tests skip only when that interpreter cannot load GStreamer's RTSP server bindings.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from streampose.errors import InputError
from streampose.sources import ReconnectPolicy, RtspSource, open_source

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
DEBIAN_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav"
)


def _gstreamer_rtsp_available() -> bool:
    try:
        probe = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer','1.0')"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _gstreamer_rtsp_available(),
    reason=f"GStreamer RTSP server not installed for {SYSTEM_PYTHON}: apt-get install {DEBIAN_PACKAGES}",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RtspServer:
    """One server process; can be killed, frozen and started again on the same port."""

    def __init__(self, video: Path, port: int, log: Path) -> None:
        self.video, self.port, self.log = video, port, log
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> None:
        # stderr goes to a file: an unread pipe would fill up and freeze the server.
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port), str(self.video)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True, encoding="utf-8",
            )
        ready = self.process.stdout.readline() if self.process.stdout else ""
        if not ready.startswith("READY"):
            self.kill()
            raise RuntimeError(f"rtsp_server.py did not start: {self.log.read_text()[-500:]}")

    def wait_until_serving(self, timeout_s: float = 60.0) -> None:
        """Block until a client gets a frame.

        READY means the port listens; the first client then makes GStreamer build the media
        pipeline, which on a fresh machine (plugin registry still being written) can take long
        enough for FFmpeg to read a half-ready answer ("Invalid data found when processing
        input", seen once in CI). Tests start from a server that has served once.
        """
        import av  # noqa: PLC0415

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with av.open(self.url, options={"rtsp_transport": "tcp", "timeout": "5000000"},
                             timeout=5.0) as container:
                    next(container.decode(video=0))
                return
            except (av.FFmpegError, StopIteration, OSError) as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"RTSP server at {self.url} never served a frame: {error}") from error
                time.sleep(0.5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)


@pytest.fixture
def rtsp_server(samples_dir: Path, tmp_path: Path) -> Iterator[RtspServer]:
    server = RtspServer(samples_dir / "vtest.avi", free_port(), tmp_path / "rtsp_server.log")
    server.start()
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.kill()


def read_until(source: RtspSource, condition: Callable[[list], bool], limit_s: float) -> list:
    frames: list = []
    deadline = time.monotonic() + limit_s
    for frame in source:
        frames.append(frame)
        if condition(frames) or time.monotonic() > deadline:
            break
    return frames


def test_reads_the_served_video(rtsp_server):
    with open_source(rtsp_server.url) as source:
        assert isinstance(source, RtspSource) and source.is_live
        assert source.size == (768, 576) and source.fps == 10.0
        assert source.frame_count is None and source.stream_info.codec == "h264"
        frames = read_until(source, lambda got: len(got) >= 15, limit_s=15)
    assert [frame.index for frame in frames] == list(range(15))
    assert all(frame.image.shape == (576, 768, 3) for frame in frames)
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))
    # Served in real time at 10 fps: 14 intervals take about 1.4 s of stream time.
    assert frames[-1].pts - frames[0].pts == pytest.approx(1.4, abs=0.3)
    assert frames[0].source_id == rtsp_server.url


def test_reconnects_after_the_server_dies_and_comes_back(rtsp_server):
    source = RtspSource(rtsp_server.url, reconnect=ReconnectPolicy(initial_delay_s=0.25, max_delay_s=1.0))
    restarted = threading.Event()

    def restart_later() -> None:
        time.sleep(2.0)
        rtsp_server.start()
        restarted.set()

    frames_before: list = []
    frames_after: list = []
    restarter = threading.Thread(target=restart_later)
    with source:
        for frame in source:
            if source.stats.reconnects == 0:
                frames_before.append(frame)
                if len(frames_before) == 5:
                    rtsp_server.kill()  # the loop must notice and reconnect on its own
                    restarter.start()
            else:
                frames_after.append(frame)
                if len(frames_after) == 5:
                    break
    restarter.join(10)
    assert restarted.is_set()
    assert source.stats.reconnects == 1
    indices = [frame.index for frame in frames_before + frames_after]
    assert indices == list(range(len(indices)))
    times = [frame.pts for frame in frames_before + frames_after]
    assert all(b > a for a, b in zip(times, times[1:]))
    # The outage (≥ 2 s while the server was down) shows as a gap in time, not a squeeze.
    assert frames_after[0].pts - frames_before[-1].pts > 1.5


def test_dead_url_fails_at_once():
    started = time.monotonic()
    with pytest.raises(InputError, match="connection refused") as raised:
        open_source(f"rtsp://127.0.0.1:{free_port()}/live", timeout_s=2.0)
    assert time.monotonic() - started < 3.0
    assert "rtsp://127.0.0.1:" in str(raised.value)


def test_gives_up_when_the_server_stays_away(rtsp_server):
    policy = ReconnectPolicy(initial_delay_s=0.2, max_delay_s=0.5, give_up_after_s=1.5)
    with RtspSource(rtsp_server.url, reconnect=policy) as source:
        read_until(source, lambda got: len(got) >= 3, limit_s=10)
        rtsp_server.kill()
        started = time.monotonic()
        with pytest.raises(InputError, match="could not reconnect") as raised:
            for _ in source:
                pass
        elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 4.0
    assert "connection refused" in str(raised.value)


def test_stalled_server_raises_instead_of_hanging(rtsp_server):
    policy = ReconnectPolicy(initial_delay_s=0.2, max_delay_s=0.5, give_up_after_s=2.0)
    with RtspSource(rtsp_server.url, timeout_s=1.0, reconnect=policy) as source:
        read_until(source, lambda got: len(got) >= 3, limit_s=10)
        rtsp_server.freeze()  # the socket stays open, nothing arrives any more
        started = time.monotonic()
        with pytest.raises(InputError, match="could not reconnect"):
            for _ in source:
                pass
        elapsed = time.monotonic() - started
    # A stalled read fails after about two timeouts, then reconnecting gives up after 2 s.
    assert elapsed < 10.0


def test_close_from_another_thread_ends_a_blocked_read_safely(rtsp_server):
    source = RtspSource(rtsp_server.url, timeout_s=1.0)
    read_until(source, lambda got: len(got) >= 2, limit_s=10)
    rtsp_server.freeze()
    finished = threading.Event()

    def consume() -> None:
        for _ in source:
            pass
        finished.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(0.3)  # the consumer is now blocked inside FFmpeg's read
    stop_at = time.monotonic()
    source.close()  # must not free the context under the reader (that would segfault)
    assert finished.wait(5.0), "close() did not end the blocked iteration"
    assert time.monotonic() - stop_at < 3.5
    consumer.join(5)
    source.close()
    assert list(source) == []  # a closed source yields nothing more


class _FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_clock_shows_an_outage_after_a_startup_backlog(monkeypatch):
    """A camera read late (models loading) first delivers a backlog faster than real time.

    CI saw this: the first connection's timeline ran ahead of wall time, so after a reconnect
    the new frames were clamped to +1 ms steps and the 5 s outage left no gap in time.
    """
    from streampose.sources import live  # noqa: PLC0415

    wall = _FakeMonotonic()
    monkeypatch.setattr(live.time, "monotonic", wall)
    clock = live._LiveClock()
    clock.new_connection()
    times = []
    for index in range(80):  # 8 s of a 10 fps stream, buffered, read in 0.8 s
        times.append(clock.seconds(index / 10))
        wall.now += 0.01
    assert times[1] - times[0] == pytest.approx(0.1)  # the stream's own spacing is kept
    wall.now += 5.0  # the server dies; the reconnect takes 5 s
    clock.new_connection()
    after = []
    for index in range(10):  # the new connection's stream clock starts again at zero
        after.append(clock.seconds(index / 10))
        wall.now += 0.1
    assert after[0] - times[-1] == pytest.approx(5.01)
    assert after[1] - after[0] == pytest.approx(0.1)
    timeline = times + after
    assert all(later > earlier for earlier, later in zip(timeline, timeline[1:]))


def _arrival_span_of_first_frames(source: RtspSource, count: int) -> float:
    """Seconds between the first and the count-th frame's arrival."""
    arrivals = []
    for _ in source:
        arrivals.append(time.monotonic())
        if len(arrivals) == count:
            break
    return arrivals[-1] - arrivals[0]


def test_an_unread_stream_is_reopened_so_the_first_frames_are_fresh(rtsp_server):
    """Opened early (the CLI does, before the models load), a stream fills the socket buffers.

    Read as it is, the first 15 frames (1.4 s of a 10 fps stream) come out of that backlog in
    a burst; after skip_backlog they come at the camera's pace, from a new connection.
    """
    spans = {}
    for skip in (False, True):
        with RtspSource(rtsp_server.url, reconnect=None) as source:
            time.sleep(3.0)
            if skip:
                source.skip_backlog()
            spans[skip] = _arrival_span_of_first_frames(source, 15)
            assert source.stats.reconnects == 0  # reopening on purpose is not a fault
    assert spans[False] < 0.7, f"no backlog built up: the test would prove nothing ({spans})"
    assert spans[True] > 1.0, f"the first frames still came in a burst ({spans})"
