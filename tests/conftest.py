"""Shared test settings: where the real models, media and COCO data are.

Everything comes from ``../shared`` beside the repository (or the environment variables below),
never from a hard-coded absolute path, and nothing is copied into the repository.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STREAMPOSE_SHARED", REPO.parent / "shared"))
MODEL_HOME = Path(os.environ.get("STREAMPOSE_MODEL_HOME", SHARED / "models"))
SAMPLES = SHARED / "samples"
DATA = SHARED / "data"
REFERENCE = DATA / "paddlex_reference"

# Models load from the shared folder for every test (and every subprocess a test starts).
os.environ["STREAMPOSE_MODEL_HOME"] = str(MODEL_HOME)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"missing shared resource {path} (the ../shared folder beside the repo)")
    return path


@pytest.fixture(scope="session")
def model_home() -> Path:
    return _require(MODEL_HOME)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return _require(SAMPLES)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(DATA)


@pytest.fixture(scope="session")
def paddle_pipeline(model_home):
    """The default pipeline on Paddle Inference, shared by tests that only read from it."""
    from streampose import create_pipeline

    return create_pipeline("human_keypoint_detection", backend="paddle")


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that stops reading mid-file (a test that breaks early) is expected here."""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def samples_http(samples_dir: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving the sample folder; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(samples_dir))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
