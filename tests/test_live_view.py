"""The live view on a real streaming graph: real models, real video, real HTTP, a real browser."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from streampose.errors import ConfigError
from streampose.graph.runner import FrameOutput, StreamGraph, StreamSettings
from streampose.render import SkeletonAnnotator
from streampose.serving.cli import attach_live_view
from streampose.serving.live import BOUNDARY, LiveView
from streampose.serving.server import parse_listen_address
from streampose.sources import open_source

SCREENSHOT = Path("/tmp/live_view.png")
TESTSRC_RATE = 15


class RunningGraph:
    """A graph from ``source_spec`` through a drawing sink into a started :class:`LiveView`."""

    def __init__(self, pipeline, source_spec: str) -> None:
        self.source = open_source(source_spec)
        annotator = SkeletonAnnotator()

        def draw(output: FrameOutput) -> None:
            annotator.annotate(output.frame.image, output.persons)

        sinks = [draw]
        self.live = attach_live_view(sinks, "127.0.0.1:0")  # what `run --serve` does
        self.graph = StreamGraph(self.source, pipeline.detector, pipeline.keypoint_model,
                                 StreamSettings(det_interval=3, det_threshold=pipeline.det_threshold), sinks)
        self.graph.start()

    def close(self) -> None:
        self.graph.stop()
        self.graph.wait(15.0)
        self.source.close()
        self.live.stop()
        assert self.graph.error is None, self.graph.error


@pytest.fixture(scope="module")
def people_stream(paddle_pipeline, samples_dir):
    """vtest.avi, looped and paced like a camera (10 fps): pedestrians come and go."""
    video = samples_dir / "vtest.avi"
    running = RunningGraph(paddle_pipeline, f"lavfi:movie={video}:loop=0,setpts=N/(10*TB)")
    yield running
    running.close()


def read_mjpeg_parts(url: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """The first ``count`` JPEGs of an MJPEG stream, parsed by its boundary and Content-Length."""
    parts: list[bytes] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = buffer[:head_end].decode("latin-1").split("\r\n")
                assert head[0] == f"--{BOUNDARY}"
                headers = dict(line.split(": ", 1) for line in head[1:])
                assert headers["Content-Type"] == "image/jpeg"
                size = int(headers["Content-Length"])
                if len(buffer) < head_end + 4 + size + 2:
                    break
                parts.append(buffer[head_end + 4:head_end + 4 + size])
                buffer = buffer[head_end + 4 + size + 2:]
            if len(parts) >= count or time.monotonic() > deadline:
                break
    return parts[:count]


def read_events(url: str, count: int, timeout: float = 20.0) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
            if len(events) >= count or time.monotonic() > deadline:
                break
    return events


def test_listen_address_parsing():
    assert parse_listen_address(":8080") == ("0.0.0.0", 8080)
    assert parse_listen_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_listen_address("[::1]:81") == ("::1", 81)
    assert parse_listen_address("8080") == ("0.0.0.0", 8080)
    with pytest.raises(ConfigError, match="expected"):
        parse_listen_address("localhost:http")


def test_a_busy_port_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            LiveView("127.0.0.1", taken.getsockname()[1]).start()


def test_a_viewer_that_never_reads_does_not_slow_the_pipeline(paddle_pipeline):
    # First in the file: the pedestrian graph below would share the 2 CPU cores with this one.
    running = RunningGraph(paddle_pipeline, f"lavfi:testsrc2=size=640x480:rate={TESTSRC_RATE}")
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        read_mjpeg_parts(running.live.url + "stream", 2)  # warmed up and streaming
        stalled.connect(("127.0.0.1", running.live.port))
        stalled.sendall(b"GET /stream HTTP/1.1\r\nHost: live\r\n\r\n")
        time.sleep(1.0)
        frames_before, encoded_before = running.graph.frames_out, running.live.jpegs_encoded
        started = time.perf_counter()
        fresh = read_mjpeg_parts(running.live.url + "stream", 3)  # another viewer is still served
        time.sleep(max(0.0, 4.0 - (time.perf_counter() - started)))
        rate = (running.graph.frames_out - frames_before) / (time.perf_counter() - started)
        produced = running.live.jpegs_encoded - encoded_before
        stalled.setblocking(False)
        waiting = 0
        try:
            while chunk := stalled.recv(1 << 20):
                waiting += len(chunk)
        except BlockingIOError:
            pass
        assert len(fresh) == 3
        assert rate > 0.8 * TESTSRC_RATE, f"pipeline slowed to {rate:.1f} fps with a stalled viewer"
        # What waits for the stalled viewer is bounded by the capped socket buffers (2 x 256 KiB
        # kernel + uvicorn's 64 KiB), not by the frames produced meanwhile.
        produced_bytes = produced * len(fresh[0])
        print(f"\nlive view: {rate:.1f} fps with a stalled viewer; ~{produced_bytes} JPEG bytes produced, "
              f"{waiting} queued for that viewer")
        assert waiting < 1024 * 1024 and waiting < 0.75 * produced_bytes, (produced_bytes, waiting)
    finally:
        stalled.close()
        running.close()


def test_page_is_self_contained(people_stream):
    response = httpx.get(people_stream.live.url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<img id="video" src="/stream"' in page and 'new EventSource("/events")' in page
    assert "://" not in page  # no CDN: works offline


def test_stream_delivers_live_jpeg_frames(people_stream):
    parts = read_mjpeg_parts(people_stream.live.url + "stream", 4)
    assert len(parts) == 4
    pictures = [cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR) for part in parts]
    assert all(picture is not None and picture.shape == (576, 768, 3) for picture in pictures)
    assert len({part for part in parts}) == 4  # a moving video, not one frame repeated


def test_events_carry_persons_with_track_ids(people_stream):
    events = read_events(people_stream.live.url + "events", 12)
    assert len(events) == 12
    frames = [event["frame"] for event in events]
    assert frames == sorted(frames) and len(set(frames)) == 12
    with_people = [event for event in events if event["persons"]]
    assert with_people, "vtest.avi always has pedestrians in view"
    person = with_people[-1]["persons"][0]
    assert set(person) == {"track_id", "bbox", "kpt_score"}
    assert isinstance(person["track_id"], int) and len(person["bbox"]) == 4
    assert events[-1]["fps"] > 0


def test_two_viewers_share_one_encode_per_frame(people_stream):
    live = people_stream.live
    results: dict[str, list] = {}

    def view(name: str) -> None:
        results[name] = read_mjpeg_parts(live.url + "stream", 5)

    encoded_before, published_before = live.jpegs_encoded, live.frames_published
    viewers = [threading.Thread(target=view, args=(name,)) for name in ("a", "b")]
    for viewer in viewers:
        viewer.start()
    for viewer in viewers:
        viewer.join(30)
    assert len(results["a"]) == 5 and len(results["b"]) == 5
    assert live.jpegs_encoded - encoded_before <= live.frames_published - published_before


# -- a real browser -------------------------------------------------------------------------------
def _browser():
    missing = [name for name, path in (("chromium", "/usr/bin/chromium"),
                                       ("chromium-driver", "/usr/bin/chromedriver")) if not Path(path).exists()]
    if missing:
        pytest.skip(f"headless browser test needs the Debian package(s) {', '.join(missing)}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="headless browser test needs selenium")
    from selenium.webdriver.chrome.service import Service

    return webdriver, Service


def test_browser_shows_video_and_live_person_list(people_stream, tmp_path):
    webdriver, Service = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1100,760", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    options.page_load_strategy = "eager"  # an MJPEG <img> never finishes loading
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(people_stream.live.url)
        seen: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 25
        width = 0
        while time.monotonic() < deadline:
            width = driver.execute_script("return document.getElementById('video').naturalWidth")
            state = driver.execute_script(
                "return [document.getElementById('frame').textContent,"
                " document.getElementById('count').textContent,"
                " document.getElementById('tracks').textContent]")
            if not seen or tuple(state) != seen[-1]:
                seen.append(tuple(state))
            if width and len(seen) >= 6 and any(count.isdigit() and int(count) > 0 for _, count, _ in seen):
                break
            time.sleep(0.2)
        assert width == 768
        frames = [frame for frame, _, _ in seen if frame.isdigit()]
        assert len(set(frames)) >= 5, seen  # updates keep arriving
        assert any(count.isdigit() and int(count) > 0 and "#" in tracks for _, count, tracks in seen), seen
        driver.save_screenshot(str(SCREENSHOT))
        video_box = driver.find_element("id", "video").rect
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    screenshot = cv2.imread(str(SCREENSHOT))
    x, y = int(video_box["x"]), int(video_box["y"])
    area = screenshot[y:y + int(video_box["height"]), x:x + int(video_box["width"])]
    assert area.size and float(area.std()) > 20.0  # a picture, not a blank box
