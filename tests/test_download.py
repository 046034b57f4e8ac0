"""Official-model download against a real HTTP server on loopback, serving a real model archive.

The server speaks honest HTTP/1.0 with optional ``Range`` support and can cut a response short,
stall, or hold a request at a gate, which is how the resume, restart, timeout and locking paths
are driven without touching the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streampose.errors import DownloadError
from streampose.models.download import URL_BASE_ENV, download_official_model, official_model_url
from streampose.models.folder import find_model_files

MODEL = "PP-TinyPose_128x96"
MODEL_FILES = ("inference.json", "inference.pdiparams", "inference.yml")
SHARED_MODELS = Path(
    os.environ.get("STREAMPOSE_MODEL_HOME") or Path(__file__).resolve().parents[1].parent / "shared" / "models"
)


# --- a small archive server -----------------------------------------------------------------


@dataclass
class Served:
    """One request as the server saw it."""

    path: str
    range_header: str | None
    status: int = 0
    bytes_sent: int = 0


@dataclass
class ArchiveServer:
    """State and knobs of the loopback server; the handler reads them on every request."""

    payload: bytes
    path: str = f"/{MODEL}_infer.tar"
    ranges: bool = True
    cuts: list[int] = field(default_factory=list)  # request i sends only cuts[i] body bytes
    stall_s: float = 0.0
    gate: threading.Event | None = None
    requests: list[Served] = field(default_factory=list)
    request_seen: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path


class _ArchiveHandler(BaseHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        state: ArchiveServer = self.server.state  # type: ignore[attr-defined]
        served = Served(self.path, self.headers.get("Range"))
        index = len(state.requests)
        state.requests.append(served)
        state.request_seen.set()
        if state.gate is not None:
            state.gate.wait(10)
        if state.stall_s:
            time.sleep(state.stall_s)
        if self.path != state.path:
            served.status = 404
            self.send_error(404)
            return
        total = len(state.payload)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", served.range_header or "")
        if state.ranges and match:
            start = int(match[1])
            if start >= total:
                served.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            served.status = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            served.status = 200
            self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(total - start))
        self.end_headers()
        body = state.payload[start:]
        if index < len(state.cuts):
            body = body[: state.cuts[index]]  # then the handler returns and the connection closes
        served.bytes_sent = len(body)  # recorded first: the client may check before this thread runs on
        self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up early (timeouts, size checks) are part of these tests, not failures."""


@pytest.fixture
def serve() -> Iterator[Callable[..., ArchiveServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(payload: bytes, **knobs: object) -> ArchiveServer:
        state = ArchiveServer(payload, **knobs)  # type: ignore[arg-type]
        httpd = _QuietServer(("127.0.0.1", 0), _ArchiveHandler)
        httpd.state = state  # type: ignore[attr-defined]
        state.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return state

    yield start
    for httpd in servers:
        state: ArchiveServer = httpd.state  # type: ignore[attr-defined]
        if state.gate is not None:
            state.gate.set()
        httpd.shutdown()
        httpd.server_close()


# --- archives -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = SHARED_MODELS / MODEL
    if not (source / "inference.pdiparams").is_file():
        pytest.skip(f"real model {source} not available (set STREAMPOSE_MODEL_HOME)")
    copy = tmp_path_factory.mktemp("source") / MODEL
    copy.mkdir()
    for name in MODEL_FILES:
        shutil.copyfile(source / name, copy / name)
    return copy


def _tar_bytes(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        add(tar)
    return buffer.getvalue()


def _model_tar(model_dir: Path, top: str | None = f"{MODEL}_infer") -> bytes:
    def add(tar: tarfile.TarFile) -> None:
        for name in MODEL_FILES:
            tar.add(model_dir / name, arcname=f"{top}/{name}" if top else name)

    return _tar_bytes(add)


@pytest.fixture(scope="module")
def model_tar(model_copy: Path) -> bytes:
    return _model_tar(model_copy)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_same_model(folder: Path, source: Path) -> None:
    files = find_model_files(folder)
    assert files.model_dir == folder
    for name in MODEL_FILES:
        assert _sha256((folder / name).read_bytes()) == _sha256((source / name).read_bytes()), name


def _assert_nothing_left(cache: Path) -> None:
    """No model folder, no staging folder, no part file: a failed download must look like none at all."""
    assert not (cache / MODEL).exists()
    assert [p.name for p in cache.iterdir() if p.name != ".downloads"] == []
    assert not (cache / ".downloads" / f"{MODEL}.tar.part").exists()


def _part(cache: Path) -> Path:
    return cache / ".downloads" / f"{MODEL}.tar.part"


# --- tests ----------------------------------------------------------------------------------


def test_fresh_download_lands_complete(serve, model_tar: bytes, model_copy: Path, tmp_path: Path) -> None:
    server = serve(model_tar)
    cache = tmp_path / "cache"

    folder = download_official_model(
        MODEL,
        cache,
        url=server.url,
        expected_sha256=_sha256(model_tar),
        expected_size=len(model_tar),
        progress=True,
    )

    assert folder == cache / MODEL
    _assert_same_model(folder, model_copy)
    assert sorted(p.name for p in cache.iterdir()) == [".downloads", MODEL]
    assert not _part(cache).exists()
    assert [(r.status, r.range_header, r.bytes_sent) for r in server.requests] == [(200, None, len(model_tar))]


def test_second_call_uses_cache_without_http(serve, model_tar: bytes, tmp_path: Path) -> None:
    server = serve(model_tar)
    first = download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    second = download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    assert first == second == tmp_path / MODEL
    assert len(server.requests) == 1


def test_url_base_comes_from_environment(serve, model_tar, model_copy, tmp_path, monkeypatch) -> None:
    server = serve(model_tar)
    monkeypatch.setenv(URL_BASE_ENV, server.base_url + "/")
    assert official_model_url(MODEL) == server.url
    _assert_same_model(download_official_model(MODEL, tmp_path, progress=False), model_copy)
    assert [r.path for r in server.requests] == [server.path]


def test_default_url_is_paddlex_official(monkeypatch) -> None:
    monkeypatch.delenv(URL_BASE_ENV, raising=False)
    assert official_model_url("PP-YOLOE-S_human") == (
        "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/"
        "paddle3.0.0/PP-YOLOE-S_human_infer.tar"
    )


def test_dropped_connection_resumes_with_range(serve, model_tar, model_copy, tmp_path) -> None:
    cut = len(model_tar) // 3
    server = serve(model_tar, cuts=[cut])

    folder = download_official_model(MODEL, tmp_path, url=server.url, progress=False)

    _assert_same_model(folder, model_copy)
    assert [(r.status, r.range_header, r.bytes_sent) for r in server.requests] == [
        (200, None, cut),
        (206, f"bytes={cut}-", len(model_tar) - cut),
    ]


def test_part_left_by_an_earlier_run_is_resumed(serve, model_tar, model_copy, tmp_path) -> None:
    cuts = [100_000, 200_000, 300_000, 400_000]  # every try breaks: this call gives up, keeping the part
    server = serve(model_tar, cuts=cuts)

    with pytest.raises(DownloadError, match=r"interrupted.*run again to resume") as failure:
        download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    assert "\n" not in str(failure.value)
    assert _part(tmp_path).stat().st_size == sum(cuts)
    assert not (tmp_path / MODEL).exists()

    folder = download_official_model(MODEL, tmp_path, url=server.url, progress=False)

    _assert_same_model(folder, model_copy)
    last = server.requests[-1]
    assert (last.status, last.range_header, last.bytes_sent) == (206, f"bytes={sum(cuts)}-", len(model_tar) - sum(cuts))
    assert sum(r.bytes_sent for r in server.requests) == len(model_tar)


def test_server_without_range_support_restarts_cleanly(serve, model_tar, model_copy, tmp_path) -> None:
    server = serve(model_tar, ranges=False)
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 5000)  # garbage that must not end up in front of the archive

    folder = download_official_model(MODEL, tmp_path, url=server.url, progress=False)

    _assert_same_model(folder, model_copy)
    assert [(r.status, r.range_header, r.bytes_sent) for r in server.requests] == [(200, "bytes=5000-", len(model_tar))]


def test_part_bigger_than_the_archive_starts_over(serve, model_tar, model_copy, tmp_path) -> None:
    server = serve(model_tar)
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(model_tar) + 10))

    folder = download_official_model(MODEL, tmp_path, url=server.url, progress=False)

    _assert_same_model(folder, model_copy)
    assert [(r.status, r.range_header) for r in server.requests] == [
        (416, f"bytes={len(model_tar) + 10}-"),
        (200, None),
    ]


def test_part_bigger_than_expected_size_is_dropped_before_asking(serve, model_tar, model_copy, tmp_path) -> None:
    server = serve(model_tar)
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(model_tar) + 1))

    folder = download_official_model(MODEL, tmp_path, url=server.url, expected_size=len(model_tar), progress=False)

    _assert_same_model(folder, model_copy)
    assert [(r.status, r.range_header) for r in server.requests] == [(200, None)]


def test_complete_part_is_not_downloaded_again(serve, model_tar, model_copy, tmp_path) -> None:
    server = serve(model_tar)
    part = _part(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(model_tar)  # a run killed between download and extraction

    _assert_same_model(download_official_model(MODEL, tmp_path, url=server.url, progress=False), model_copy)
    assert [(r.status, r.bytes_sent) for r in server.requests] == [(416, 0)]


def test_http_404_says_not_found(serve, model_tar, tmp_path) -> None:
    server = serve(model_tar)
    missing = server.base_url + "/nothing_here.tar"
    with pytest.raises(DownloadError) as failure:
        download_official_model(MODEL, tmp_path, url=missing, progress=False)
    message = str(failure.value)
    assert message.startswith(f"model {MODEL}: not found at {missing} (HTTP 404)")
    assert "\n" not in message
    _assert_nothing_left(tmp_path)


def test_unreachable_server_points_at_offline_models(tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{MODEL}_infer.tar"  # nothing listens there any more
    with pytest.raises(DownloadError) as failure:
        download_official_model(MODEL, tmp_path, url=url, progress=False)
    message = str(failure.value)
    assert url in message and "refused" in message.lower()
    assert f"STREAMPOSE_MODEL_HOME=<folder holding {MODEL}/>" in message
    assert "\n" not in message
    _assert_nothing_left(tmp_path)


def test_stalled_server_times_out(serve, model_tar, tmp_path) -> None:
    server = serve(model_tar, stall_s=1.5)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out after 0\.3 s"):
        download_official_model(MODEL, tmp_path, url=server.url, timeout=0.3, progress=False)
    assert time.monotonic() - started < 1.4
    _assert_nothing_left(tmp_path)


def test_corrupt_archive_is_deleted(serve, model_tar, tmp_path) -> None:
    garbage = bytes(range(256)) * 4096
    server = serve(garbage)
    with pytest.raises(DownloadError, match="not a valid tar archive") as failure:
        download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    assert "\n" not in str(failure.value)
    _assert_nothing_left(tmp_path)


def test_truncated_archive_is_deleted(serve, model_tar, tmp_path) -> None:
    server = serve(model_tar[: len(model_tar) // 2])  # the server itself holds a broken file
    with pytest.raises(DownloadError, match="not a valid tar archive"):
        download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    _assert_nothing_left(tmp_path)


def test_sha256_mismatch_leaves_nothing(serve, model_tar, tmp_path) -> None:
    server = serve(model_tar)
    with pytest.raises(DownloadError, match=f"sha256 {_sha256(model_tar)}, expected 0+; deleted it"):
        download_official_model(MODEL, tmp_path, url=server.url, expected_sha256="0" * 64, progress=False)
    _assert_nothing_left(tmp_path)


def test_size_mismatch_leaves_nothing(serve, model_tar, tmp_path) -> None:
    server = serve(model_tar)
    with pytest.raises(DownloadError, match=f"serves {len(model_tar)} bytes, expected 1234"):
        download_official_model(MODEL, tmp_path, url=server.url, expected_size=1234, progress=False)
    _assert_nothing_left(tmp_path)


def test_member_climbing_out_is_rejected(serve, model_copy, tmp_path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        for name in MODEL_FILES:
            tar.add(model_copy / name, arcname=f"{MODEL}_infer/{name}")
        evil = tarfile.TarInfo(f"{MODEL}_infer/../../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))

    server = serve(_tar_bytes(add))
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(DownloadError, match=r"unsafe member .*escaped\.txt.*'\.\.'"):
        download_official_model(MODEL, cache, url=server.url, progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    _assert_nothing_left(cache)


def test_symlink_pointing_outside_is_rejected(serve, model_copy, tmp_path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        for name in ("inference.json", "inference.pdiparams"):
            tar.add(model_copy / name, arcname=f"{MODEL}_infer/{name}")
        link = tarfile.TarInfo(f"{MODEL}_infer/inference.yml")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../outside.yml"
        tar.addfile(link)

    server = serve(_tar_bytes(add))
    with pytest.raises(DownloadError, match=r"unsafe member .*links outside"):
        download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    _assert_nothing_left(tmp_path)


def test_archive_without_top_folder_is_accepted(serve, model_copy, tmp_path) -> None:
    server = serve(_model_tar(model_copy, top=None))
    folder = download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    _assert_same_model(folder, model_copy)


def test_archive_without_a_model_leaves_nothing(serve, model_copy, tmp_path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        tar.add(model_copy / "inference.yml", arcname=f"{MODEL}_infer/inference.yml")

    server = serve(_tar_bytes(add))
    with pytest.raises(DownloadError, match="holds no usable model"):
        download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    _assert_nothing_left(tmp_path)


def test_incomplete_folder_in_the_way_is_not_overwritten(serve, model_tar, tmp_path) -> None:
    server = serve(model_tar)
    (tmp_path / MODEL).mkdir()
    (tmp_path / MODEL / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="already exists but is not a complete model"):
        download_official_model(MODEL, tmp_path, url=server.url, progress=False)
    assert (tmp_path / MODEL / "notes.txt").read_text() == "mine"
    assert server.requests == []


def test_path_like_name_is_refused(tmp_path) -> None:
    with pytest.raises(DownloadError, match="not a plain model name"):
        download_official_model("../escape", tmp_path, url="http://127.0.0.1:9/x.tar", progress=False)


def test_concurrent_downloads_of_one_model_fetch_once(serve, model_tar, model_copy, tmp_path) -> None:
    gate = threading.Event()
    server = serve(model_tar, gate=gate)
    outcomes: dict[str, object] = {}

    def fetch(tag: str) -> None:
        try:
            outcomes[tag] = download_official_model(MODEL, tmp_path, url=server.url, progress=False)
        except Exception as exc:  # reported by the assertions below
            outcomes[tag] = exc

    first = threading.Thread(target=fetch, args=("first",))
    first.start()
    assert server.request_seen.wait(5), "first download never reached the server"
    second = threading.Thread(target=fetch, args=("second",))
    second.start()
    second.join(0.5)
    assert second.is_alive(), "second download did not wait for the first"
    gate.set()
    first.join(20)
    second.join(20)

    assert outcomes == {"first": tmp_path / MODEL, "second": tmp_path / MODEL}
    assert len(server.requests) == 1
    _assert_same_model(tmp_path / MODEL, model_copy)
