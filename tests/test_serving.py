"""The PaddleX-compatible HTTP API on a real uvicorn server, real models and real HTTP.

The server runs in this process (a thread), so its memory can be read from /proc/self.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.server
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from streampose.errors import ConfigError
from streampose.serving.app import INFER_PATH, ServingSettings, create_app
from streampose.serving.cli import cmd_serve
from streampose.serving.server import BackgroundServer

TOLERANCE = 1e-3
BODY_LIMIT = 32 * 1024 * 1024
IMAGES = ("messi5.jpg", "basketball1.png")


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(paddle_pipeline):
    return paddle_pipeline


@pytest.fixture(scope="module")
def server(pipeline):
    app = create_app(pipeline, ServingSettings(max_body_bytes=BODY_LIMIT, max_batch=8, batch_wait_s=0.005))
    running = BackgroundServer(app, "127.0.0.1", 0)
    running.start()
    yield running
    running.stop()
    assert not running._thread.is_alive(), "the server thread did not stop"


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def batcher(server):
    return server.app.state.batcher


class _MediaHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the samples folder, plus a redirect to file:// that a fetcher must refuse."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path == "/to-image":
            self.send_response(301)
            self.send_header("Location", "/messi5.jpg")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def media_url(samples_dir):
    """A second, independent HTTP server on loopback that hosts the sample images."""
    handler = lambda *a, **k: _MediaHandler(*a, directory=str(samples_dir), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def references(pipeline, samples_dir):
    """``pipeline.predict`` on each sample file: what the API must answer."""
    return {name: next(pipeline.predict(str(samples_dir / name))) for name in IMAGES}


def b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def assert_same_persons(persons: list[dict], reference) -> None:
    boxes = reference["boxes"]
    assert len(persons) == len(boxes) > 0
    for person, box in zip(persons, boxes):
        assert set(person) == {"bbox", "kpts", "detScore", "kptScore"}
        np.testing.assert_allclose(person["bbox"], np.asarray(box["coordinate"], dtype=np.float64), atol=TOLERANCE)
        np.testing.assert_allclose(person["kpts"], np.asarray(box["keypoints"], dtype=np.float64), atol=TOLERANCE)
        assert abs(person["detScore"] - float(box["det_score"])) < TOLERANCE
        assert abs(person["kptScore"] - float(box["kpt_score"])) < TOLERANCE


def assert_error_shape(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"logId", "errorCode", "errorMsg"}
    assert body["errorCode"] == status
    assert isinstance(body["logId"], str) and body["logId"]
    return body


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG: a few KB on the wire, ``width*height`` pixels once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


# -- the happy path -----------------------------------------------------------------------------
def test_health_and_openapi(client):
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["errorCode"] == 0 and body["errorMsg"] == "Healthy" and body["logId"]
    schema = client.get("/openapi.json").json()
    operation = schema["paths"][INFER_PATH]["post"]
    assert operation["operationId"] == "infer"
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("name", IMAGES)
def test_base64_request_gives_the_same_persons_as_predict(client, samples_dir, references, name):
    response = client.post(INFER_PATH, json={"image": b64_file(samples_dir / name), "visualize": False})
    assert response.status_code == 200
    body = response.json()
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success"
    assert "image" not in body["result"]  # None fields are dropped, as PaddleX does
    assert_same_persons(body["result"]["persons"], references[name])


def test_url_request_gives_the_same_persons_as_predict(client, media_url, references):
    for url in (f"{media_url}/basketball1.png", f"{media_url}/to-image"):
        response = client.post(INFER_PATH, json={"image": url, "visualize": False})
        assert response.status_code == 200, response.text
        expected = references["basketball1.png" if url.endswith("png") else "messi5.jpg"]
        assert_same_persons(response.json()["result"]["persons"], expected)


def test_visualization_is_the_skeleton_picture_as_jpeg(client, samples_dir, references):
    image_b64 = b64_file(samples_dir / "messi5.jpg")
    for visualize in (True, None):  # None: the YAML's Serving.visualize (True)
        response = client.post(INFER_PATH, json={"image": image_b64, "visualize": visualize})
        data = base64.b64decode(response.json()["result"]["image"])
        assert data[:3] == b"\xff\xd8\xff"  # JPEG
        picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        original = cv2.imread(str(samples_dir / "messi5.jpg"))
        assert picture.shape == original.shape
        drawn = references["messi5.jpg"].visualize()
        error_to_drawing = np.abs(picture.astype(int) - drawn.astype(int)).mean()
        error_to_original = np.abs(picture.astype(int) - original.astype(int)).mean()
        assert error_to_drawing < error_to_original  # the skeleton is on it


def test_det_threshold_filters_persons(client, pipeline, samples_dir):
    image_b64 = b64_file(samples_dir / "basketball1.png")
    counts = {}
    for threshold in (0.05, 0.935):
        response = client.post(INFER_PATH, json={"image": image_b64, "detThreshold": threshold, "visualize": False})
        persons = response.json()["result"]["persons"]
        assert all(person["detScore"] >= threshold for person in persons)
        expected = next(pipeline.predict(str(samples_dir / "basketball1.png"), det_threshold=threshold))
        assert len(persons) == len(expected["boxes"])
        counts[threshold] = len(persons)
    assert counts[0.05] > counts[0.935] >= 1


def test_paddlex_client_script_works_unchanged(server, samples_dir, tmp_path):
    output = tmp_path / "out.jpg"
    script = Path(__file__).with_name("paddlex_client.py")
    completed = subprocess.run(
        [sys.executable, str(script), "--url", server.url, "--image", str(samples_dir / "basketball2.png"),
         "--output", str(output)], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "Detected persons" in completed.stdout and "'kpts'" in completed.stdout
    picture = cv2.imread(str(output))
    assert picture is not None and picture.shape == cv2.imread(str(samples_dir / "basketball2.png")).shape


# -- bad requests -------------------------------------------------------------------------------
VALIDATION_CASES = {
    "missing image": ({"detThreshold": 0.5}, "body.image"),
    "image not a string": ({"image": 123}, "body.image"),
    "threshold not a number": ({"image": "aGk=", "detThreshold": "abc"}, "body.detThreshold"),
    "threshold above 1": ({"image": "aGk=", "detThreshold": 1.5}, "body.detThreshold"),
    "visualize not a bool": ({"image": "aGk=", "visualize": "maybe"}, "body.visualize"),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_validation_errors_are_422_in_paddlex_format(client, case):
    payload, location = VALIDATION_CASES[case]
    body = assert_error_shape(client.post(INFER_PATH, json={**payload, "logId": "client-log-7"}), 422)
    assert body["logId"] == "client-log-7"  # PaddleX 3.7 echoes a logId found in the body
    errors = json.loads(body["errorMsg"])
    assert [error["loc"] for error in errors] == [location]
    assert all(set(error) == {"type", "loc", "msg"} for error in errors)


def test_body_that_is_not_json_is_422(client):
    response = client.post(INFER_PATH, content=b"{not json", headers={"Content-Type": "application/json"})
    assert json.loads(assert_error_shape(response, 422)["errorMsg"])[0]["type"] == "json_invalid"


def _bad_images(media_url: str) -> dict[str, tuple[str, str]]:
    """name → (the image field, a fragment of the cause the server logs)."""
    return {
        "not base64": ("@@@ definitely not base64 @@@", "not valid Base64"),
        "base64 of text": (base64.b64encode(b"hello, this is text").decode(), "not a readable image"),
        "over 178956970 pixels": (base64.b64encode(huge_png(20000, 10000)).decode(), "pixels"),
        "unreachable URL": (f"http://127.0.0.1:{closed_port()}/x.jpg", "cannot be fetched"),
        "URL answering 404": (f"{media_url}/no-such.jpg", "HTTP 404"),
        "file URL": ("file:///etc/passwd", "unsupported URL scheme"),
        "redirect to a file URL": (f"{media_url}/to-file", "only http:// and https://"),
    }


@pytest.mark.parametrize("case", ["not base64", "base64 of text", "over 178956970 pixels", "unreachable URL",
                                  "URL answering 404", "file URL", "redirect to a file URL"])
def test_unusable_images_are_500_and_the_server_stays_up(client, media_url, caplog, case):
    image, cause = _bad_images(media_url)[case]
    with caplog.at_level("WARNING", logger="streampose.serving"):
        started = time.perf_counter()
        body = assert_error_shape(client.post(INFER_PATH, json={"image": image}), 500)
        elapsed = time.perf_counter() - started
    assert body["errorMsg"] == "Internal server error"
    logged = [record.getMessage() for record in caplog.records if body["logId"] in record.getMessage()]
    assert logged and cause in logged[0], logged  # rejected for the right reason (file never read)
    assert elapsed < 5.0
    assert client.get("/health").json()["errorMsg"] == "Healthy"


def test_huge_image_is_rejected_from_its_header_without_decoding(client):
    huge = base64.b64encode(huge_png(20000, 10000)).decode()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
    except OSError as exc:
        pytest.skip(f"cannot reset the peak-RSS counter here ({exc})")
    peak_before = rss_kib("VmHWM")
    assert_error_shape(client.post(INFER_PATH, json={"image": huge}), 500)
    # Decoding would allocate 20000*10000*3 bytes = 600 MB.
    assert rss_kib("VmHWM") - peak_before < 100 * 1024


def test_oversized_bodies_are_413(client, server):
    big = b'{"image": "' + b"A" * (BODY_LIMIT + 16) + b'"}'
    assert_error_shape(client.post(INFER_PATH, content=big, headers={"Content-Type": "application/json"}), 413)

    def chunks():  # chunked transfer: no Content-Length to check up front
        piece = b"A" * (1 << 20)
        yield b'{"image": "'
        for _ in range(BODY_LIMIT // len(piece) + 2):
            yield piece
        yield b'"}'

    response = client.post(INFER_PATH, content=chunks(), headers={"Content-Type": "application/json"})
    assert_error_shape(response, 413)
    assert client.get("/health").status_code == 200


def test_memory_does_not_grow_across_bad_requests(client, media_url):
    bad = _bad_images(media_url)
    bodies = [{"image": bad["not base64"][0]}, {"image": bad["base64 of text"][0]},
              {"image": bad["over 178956970 pixels"][0]}, {"image": bad["file URL"][0]},
              {"image": bad["URL answering 404"][0]}, {"image": 5}, {"detThreshold": "x"}]
    for body in bodies * 3:  # warm-up: first-use imports and caches
        client.post(INFER_PATH, json=body)
    before = rss_kib()
    statuses = [client.post(INFER_PATH, json=bodies[index % len(bodies)]).status_code for index in range(200)]
    grown_mib = (rss_kib() - before) / 1024
    assert set(statuses) == {500, 422}
    assert grown_mib < 30, f"RSS grew {grown_mib:.1f} MiB over 200 bad requests"


# -- load -----------------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_answered_correctly(server, batcher, samples_dir, references):
    payloads = {name: {"image": b64_file(samples_dir / name), "visualize": False} for name in IMAGES}
    calls_before, images_before = batcher.stats.calls, batcher.stats.images
    clients, per_client = 8, 25

    async def worker(session: httpx.AsyncClient, worker_index: int) -> list[tuple[str, httpx.Response]]:
        answers = []
        for request_index in range(per_client):
            name = IMAGES[(worker_index + request_index) % len(IMAGES)]  # mixed sizes in each batch
            answers.append((name, await session.post(INFER_PATH, json=payloads[name])))
        return answers

    async def load() -> list[tuple[str, httpx.Response]]:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as session:
            results = await asyncio.gather(*(worker(session, index) for index in range(clients)))
        return [answer for answers in results for answer in answers]

    started = time.perf_counter()
    answers = asyncio.run(load())
    seconds = time.perf_counter() - started
    assert len(answers) == clients * per_client
    for name, response in answers:
        assert response.status_code == 200, response.text
        assert_same_persons(response.json()["result"]["persons"], references[name])  # no mix-ups
    calls = batcher.stats.calls - calls_before
    images = batcher.stats.images - images_before
    mean_batch = images / calls
    print(f"\nserving load: {len(answers)} requests from {clients} clients in {seconds:.1f} s "
          f"({len(answers) / seconds:.1f} req/s), {calls} model calls, mean batch {mean_batch:.2f}")
    assert images == len(answers)
    assert mean_batch > 1.5


# -- the command --------------------------------------------------------------------------------
SERVE_MAIN = (
    "import argparse, sys\n"
    "from streampose.cli import _add_runtime_flags\n"
    "from streampose.serving.cli import add_serve_command, cmd_serve\n"
    "parser = argparse.ArgumentParser()\n"
    "add_serve_command(parser.add_subparsers(dest='command'), _add_runtime_flags)\n"
    "sys.exit(cmd_serve(parser.parse_args(sys.argv[1:])))\n"
)


def test_serve_command_answers_and_stops_on_ctrl_c(samples_dir, model_home):
    port = closed_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_MAIN, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--backend", "paddle", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "streampose serve did not come up"
            time.sleep(0.3)
        response = httpx.post(f"{url}{INFER_PATH}", json={"image": b64_file(samples_dir / "messi5.jpg")}, timeout=60)
        assert response.status_code == 200 and len(response.json()["result"]["persons"]) == 1
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert f"on http://127.0.0.1:{port} " in stderr


def test_serve_command_on_a_busy_port_fails_before_loading_models():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        args = argparse.Namespace(pipeline="human_keypoint_detection", host="127.0.0.1",
                                  port=taken.getsockname()[1], device=None, backend=None)
        started = time.perf_counter()
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            cmd_serve(args)
        assert time.perf_counter() - started < 1.0
