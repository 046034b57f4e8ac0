"""Live view of a running graph in a browser: MJPEG ``/stream``, Server-Sent Events ``/events``, page ``/``.

The pipeline must never wait for a viewer. The sink therefore does all per-frame work once
(one JPEG encode, one JSON dump) and only *replaces* the latest frame in a :class:`FrameHub`;
each viewer's coroutine wakes up, sends whatever is newest, and simply misses the frames that
were replaced while it was still sending. A viewer that stops reading blocks only its own
coroutine (uvicorn's flow control), never the graph and never the other viewers, and memory
stays at one frame per viewer at most.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import cv2
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse

from streampose.graph.api import frame_record
from streampose.graph.runner import FrameOutput
from streampose.serving.server import BackgroundServer

BOUNDARY = "frame"
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
SEND_BUFFER_BYTES = 256 * 1024  # per viewer: a few frames in flight, not seconds of backlog


class FrameHub:
    """The newest JPEG and the newest event, with wake-ups for the viewers' coroutines.

    ``publish`` is called from the pipeline's sink thread; everything else runs on the server's
    event loop. One ``call_soon_threadsafe`` per frame crosses between them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[int, bytes | None]] = {"jpeg": (0, None), "event": (0, None)}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakers: set[asyncio.Event] = set()
        self.closed = False
        self.stream_viewers = 0  # read by the sink thread to skip JPEG encoding when nobody watches
        self.event_viewers = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, jpeg: bytes | None, event: bytes) -> None:
        with self._lock:
            sequence = self._latest["event"][0] + 1
            self._latest = {"jpeg": (sequence, jpeg), "event": (sequence, event)}
        self._notify()

    def latest(self, kind: str) -> tuple[int, bytes | None]:
        with self._lock:
            return self._latest[kind]

    def close(self) -> None:
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake_all)
        except RuntimeError:  # the loop stopped between the check and the call
            pass

    def _wake_all(self) -> None:
        for waker in self._wakers:
            waker.set()

    async def updates(self, kind: str, min_interval_s: float = 0.0) -> AsyncIterator[bytes | None]:
        """Yield each newer payload of ``kind`` (skipping any this viewer was too slow for).

        Yields None after ``KEEPALIVE_S`` without news, so callers can send a keep-alive.
        """
        waker = asyncio.Event()
        self._wakers.add(waker)
        seen = 0
        last_sent = 0.0
        try:
            while not self.closed:
                sequence, payload = self.latest(kind)
                if payload is not None and sequence != seen:
                    wait = last_sent + min_interval_s - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue  # something newer may have arrived meanwhile
                    seen, last_sent = sequence, time.monotonic()
                    yield payload
                    continue
                waker.clear()
                try:
                    await asyncio.wait_for(waker.wait(), timeout=KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield None
        finally:
            self._wakers.discard(waker)


class _RateMeter:
    """Frames per second over the last couple of seconds (steadier than 1/interval)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float) -> float:
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


def event_payload(output: FrameOutput, fps: float) -> dict:
    """What ``/events`` sends for one frame (a slim :func:`frame_record`)."""
    record = frame_record(output)
    return {
        "source": record["source"],
        "frame": record["frame"],
        "time": record["time"],
        "fps": round(fps, 2),
        "persons": [{"track_id": person["track_id"], "bbox": person["bbox"], "kpt_score": person["kpt_score"]}
                    for person in record["persons"]],
    }


def index_html() -> str:
    return resources.files("streampose.serving").joinpath("static/index.html").read_text(encoding="utf-8")


def create_live_app(hub: FrameHub, max_event_rate: float = 30.0) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind_loop(asyncio.get_running_loop())
        yield
        hub.close()

    app = FastAPI(title="streampose live view", lifespan=lifespan)
    page = index_html()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(_mjpeg_parts(hub), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(_sse_messages(hub, max_event_rate), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


async def _mjpeg_parts(hub: FrameHub) -> AsyncIterator[bytes]:
    hub.stream_viewers += 1
    try:
        async for jpeg in hub.updates("jpeg"):
            if jpeg is None:
                continue
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                   + jpeg + b"\r\n")
    finally:
        hub.stream_viewers -= 1


async def _sse_messages(hub: FrameHub, max_rate: float) -> AsyncIterator[bytes]:
    hub.event_viewers += 1
    try:
        yield b"retry: 1000\n\n"
        async for message in hub.updates("event", 1.0 / max_rate if max_rate > 0 else 0.0):
            yield message if message is not None else b": keep-alive\n\n"
    finally:
        hub.event_viewers -= 1


class LiveView:
    """A graph sink plus a small web server showing the annotated frames and persons live.

    Put :meth:`sink` after the sink that draws on ``output.frame.image``; it reads the picture,
    never changes it. ``port=0`` picks a free port (see :attr:`url`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, jpeg_quality: int = 80,
                 max_event_rate: float = 30.0, log_level: str = "warning",
                 send_buffer_bytes: int = SEND_BUFFER_BYTES) -> None:
        self.hub = FrameHub()
        self.jpeg_quality = int(jpeg_quality)
        self.frames_published = 0
        self.jpegs_encoded = 0
        self._meter = _RateMeter()
        self._server = BackgroundServer(create_live_app(self.hub, max_event_rate), host, port, log_level,
                                        send_buffer_bytes=send_buffer_bytes)

    @property
    def url(self) -> str:
        return self._server.url + "/"

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> LiveView:
        self._server.start()
        return self

    def stop(self) -> None:
        self.hub.close()
        self._server.stop()

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def sink(self, output: FrameOutput) -> None:
        """Publish one frame: encode once for every viewer, and only when someone watches."""
        fps = self._meter.tick(time.perf_counter())
        event = b"data: " + json.dumps(event_payload(output, fps), separators=(",", ":")).encode() + b"\n\n"
        jpeg = None
        if self.hub.stream_viewers > 0:
            ok, encoded = cv2.imencode(".jpg", output.frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                jpeg = encoded.tobytes()
                self.jpegs_encoded += 1
        self.hub.publish(jpeg, event)
        self.frames_published += 1
