"""Live sources: RTSP cameras, local webcams and FFmpeg's lavfi test pictures.

Live means latency beats completeness and the source must outlive network faults. So:

* every fault, *including a clean end of stream*, is a disconnect: when an RTSP server dies,
  FFmpeg's read loop just ends without an exception, and a camera does not "end";
* reconnecting backs off exponentially (0.5 s doubling to 8 s by default) and gives up only
  when the :class:`ReconnectPolicy` says so, raising :class:`~streampose.errors.InputError`;
* frame indices keep counting across reconnects and timestamps keep increasing, so trackers and
  encoders downstream never see time go backwards;
* every blocking read is bounded by ``timeout_s`` (FFmpeg's interrupt callback, armed through
  PyAV), which is also what bounds :meth:`LiveSource.stop`.

``stop()`` only sets a flag, and ``close()`` from another thread defers the release to the
reading thread. Closing the container while the reading thread is inside ``av_read_frame``
would free memory FFmpeg is still using; waiting at most one read timeout is the safe price.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av.container
import av.error
import av.video.stream

from ..errors import InputError
from . import _pyav
from .base import Frame, FrameSource, StreamInfo, as_contiguous_bgr, describe_error, redact_url


@dataclass(frozen=True)
class ReconnectPolicy:
    """How long and how often a live source tries to come back after losing its input.

    ``max_attempts`` counts failed attempts in a row; ``give_up_after_s`` counts seconds since
    the input was lost. Either limit, when set, ends the source with an InputError; with both
    None it retries for ever (the right default for an unattended camera box).
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_attempts: int | None = None
    give_up_after_s: float | None = None

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based)."""
        return min(self.initial_delay_s * (2 ** (attempt - 1)), self.max_delay_s)


class _LiveClock:
    """Turns per-connection stream timestamps into one increasing timeline in seconds.

    Within a connection the stream's own spacing is kept, so the tracker's time steps are the
    camera's. A reconnect restarts the stream's clock, so each new connection starts where the
    last one ended plus the wall time between the last frame before the outage and the first
    after it: the outage shows up as a gap of its own length. Anchoring a new connection at
    wall time instead fails when the first connection began with a backlog (frames buffered
    while the models loaded, then read faster than real time): its timeline then runs ahead of
    wall time, the new connection's times fall behind it and are clamped, and no gap appears.
    """

    def __init__(self) -> None:
        self._started_at: float | None = None
        self._connection_offset: float | None = None
        self._last = -math.inf
        self._last_arrival: float | None = None

    def new_connection(self) -> None:
        self._connection_offset = None

    def seconds(self, stream_seconds: float | None) -> float:
        now = time.monotonic()
        if self._started_at is None:
            self._started_at = now
        if stream_seconds is None:
            value = now - self._started_at
        else:
            if self._connection_offset is None:
                start = (now - self._started_at if self._last_arrival is None
                         else self._last + (now - self._last_arrival))
                self._connection_offset = start - stream_seconds
            value = stream_seconds + self._connection_offset
        value = max(value, self._last + 1e-3)
        self._last = value
        self._last_arrival = now
        return value

    def wall_time_of(self, seconds: float) -> float | None:
        return None if self._started_at is None else self._started_at + seconds


class LiveSource(FrameSource):
    """Common reading, reconnecting and timing logic of the live inputs."""

    is_live = True
    kind = "live"
    # Whether the input keeps sending while nobody reads (a network stream fills socket buffers).
    buffers_while_unread = False
    # An unread connection older than this is reopened by skip_backlog.
    STALE_AFTER_S = 1.0

    def __init__(
        self,
        url: str,
        *,
        av_format: str | None,
        options: dict[str, str],
        display_name: str,
        source_id: str | None,
        timeout_s: float,
        reconnect: ReconnectPolicy | None,
        realtime: bool = False,
        thread_type: str = "SLICE",
    ) -> None:
        super().__init__(source_id or display_name)
        self._url = url
        self._av_format = av_format
        self._options = options
        self._display_name = display_name
        self._timeout_s = timeout_s
        self._policy = reconnect
        self._realtime = realtime
        self._thread_type = thread_type
        self._clock = _LiveClock()
        self._container: av.container.InputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._rate: Fraction | None = None
        self._size: tuple[int, int] | None = None
        self._connected_at = 0.0
        try:
            self._connect()
        except _pyav.READ_ERRORS as error:
            raise InputError(
                f"cannot open {self.kind} {display_name}: {self._open_cause(error)}"
            ) from None

    @property
    def fps(self) -> float | None:
        return float(self._rate) if self._rate else None

    @property
    def frame_count(self) -> int | None:
        return None

    @property
    def size(self) -> tuple[int, int] | None:
        return self._size

    @property
    def stream_info(self) -> StreamInfo:
        codec = self._stream.codec_context.name if self._stream is not None else None
        return StreamInfo(rate=self._rate, time_base=None, codec=codec)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        cause = "not connected"
        while not self.stop_requested:
            if self._container is None and not self._reconnect(cause):
                return
            assert self._container is not None and self._stream is not None
            causes: list[str] = []
            time_base = Fraction(self._stream.time_base) if self._stream.time_base else None
            stream_clock = _pyav.TimestampGuesser(time_base)
            try:
                for av_frame in _pyav.decode_video(self._container, self._stream, self.stats, causes):
                    pts = self._clock.seconds(stream_clock.seconds(av_frame))
                    if self._realtime and not self._wait_until(pts):
                        return
                    image = as_contiguous_bgr(av_frame.to_ndarray(format="bgr24"))
                    self.stats.frames_read += 1
                    yield Frame(self.source_id, index, pts, image)
                    index += 1
                    if self.stop_requested:
                        return
                cause = "end of stream"
            except _pyav.TooManyDecodeErrors as error:
                cause = str(error)
            except _pyav.READ_ERRORS as error:
                if self.stop_requested:
                    return
                cause = describe_error(error)
            self._disconnect()
            if self._policy is None:
                if cause != "end of stream":
                    self.decode_error = f"{self._display_name} failed after {index} frames: {cause}"
                return

    def _release(self) -> None:
        self._disconnect()

    def _connect(self) -> None:
        container = _pyav.open_container(
            self._url, av_format=self._av_format, options=self._options, timeout_s=self._timeout_s
        )
        stream = _pyav.first_video_stream(container)
        if stream is None:
            _pyav.close_quietly(container)
            raise OSError("no video stream")
        _pyav.enable_threaded_decoding(stream, self._thread_type)
        self._container, self._stream = container, stream
        self._rate = _pyav.stream_rate(stream) or self._rate
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:
            self._size = (width, height)
        self._clock.new_connection()
        self._connected_at = time.monotonic()

    def skip_backlog(self) -> None:
        """Reopen a network stream that has sat unread, so that the first frames are fresh.

        The CLI opens a source before loading the models, so that a bad URL fails at once; an
        RTSP server meanwhile streams on in real time into the socket buffers (8 s of vtest.avi
        when the models loaded on a busy 2-core machine). Read, that backlog is seconds-old
        frames delivered in a burst. A new connection (~0.6 s) starts at the live edge instead.
        If the reopening fails, the read loop's reconnecting takes over.
        """
        if not self.buffers_while_unread or self.stats.frames_read or self._container is None:
            return
        if time.monotonic() - self._connected_at < self.STALE_AFTER_S:
            return
        self._disconnect()
        try:
            self._connect()
        except _pyav.READ_ERRORS:
            pass

    def _disconnect(self) -> None:
        container, self._container, self._stream = self._container, None, None
        if container is not None:
            _pyav.close_quietly(container)

    def _reconnect(self, cause: str) -> bool:
        """Back off and retry until connected (True), stopped (False) or out of patience (raise)."""
        assert self._policy is not None
        lost_at = time.monotonic()
        last_failure = cause
        attempt = 0
        while True:
            attempt += 1
            delay = self._policy.delay_before(attempt)
            if self._policy.give_up_after_s is not None:
                remaining = self._policy.give_up_after_s - (time.monotonic() - lost_at)
                delay = max(0.0, min(delay, remaining))
            if self._stop_requested.wait(delay):
                return False
            try:
                self._connect()
            except _pyav.READ_ERRORS as error:
                last_failure = self._open_cause(error)
            else:
                self.stats.reconnects += 1
                return True
            if self.stop_requested:
                return False
            self._give_up_if_due(attempt, time.monotonic() - lost_at, cause, last_failure)

    def _give_up_if_due(self, failed: int, waited_s: float, cause: str, last_failure: str) -> None:
        policy = self._policy
        assert policy is not None
        out_of_attempts = policy.max_attempts is not None and failed >= policy.max_attempts
        out_of_time = policy.give_up_after_s is not None and waited_s >= policy.give_up_after_s
        if out_of_attempts or out_of_time:
            raise InputError(
                f"lost {self.kind} {self._display_name} ({cause}) and could not reconnect: "
                f"{failed} attempts in {waited_s:.1f} s, last: {last_failure}"
            )

    def _wait_until(self, pts: float) -> bool:
        """Hold a frame until its time comes, as a camera would; False when stopped meanwhile."""
        due = self._clock.wall_time_of(pts)
        delay = 0.0 if due is None else due - time.monotonic()
        return not (delay > 0 and self._stop_requested.wait(delay))

    def _open_cause(self, error: BaseException) -> str:
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, (TimeoutError, av.error.ExitError)):
            return f"no answer within {self._timeout_s:g} s"
        return describe_error(error)


# --- RTSP ---------------------------------------------------------------------------------

RTSP_SCHEMES = ("rtsp://", "rtsps://")


class RtspSource(LiveSource):
    """An RTSP camera or server, over TCP by default (UDP loses packets behind NAT and Wi-Fi)."""

    kind = "RTSP stream"
    buffers_while_unread = True

    def __init__(
        self,
        url: str,
        *,
        source_id: str | None = None,
        transport: str = "tcp",
        timeout_s: float = 5.0,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),
        options: dict[str, str] | None = None,
    ) -> None:
        av_options = {
            "rtsp_transport": transport,
            # FFmpeg's socket timeout, in microseconds; a stalled server then fails a read
            # (after about twice this) instead of blocking for ever.
            "timeout": str(int(timeout_s * 1_000_000)),
            # Low-latency probing: open in ~0.6 s instead of ~3 s, no input buffering.
            "fflags": "nobuffer",
            "flags": "low_delay",
            "analyzeduration": "500000",
            "probesize": "500000",
        }
        av_options.update(options or {})
        super().__init__(
            url,
            av_format=None,
            options=av_options,
            display_name=redact_url(url),
            source_id=source_id,
            timeout_s=timeout_s,
            reconnect=reconnect,
        )


# --- webcams ------------------------------------------------------------------------------


def webcam_device(spec: str | int) -> tuple[str, str]:
    """(device name, FFmpeg input format) of a webcam given as an index or a device path."""
    text = str(spec)
    if text.startswith("/dev/"):
        return text, "v4l2"
    if not text.isdigit():
        raise InputError(f"cannot open webcam {text}: expected an index like 0 or a /dev/video* path")
    if sys.platform.startswith("linux"):
        return f"/dev/video{text}", "v4l2"
    if sys.platform == "darwin":
        return text, "avfoundation"
    raise InputError(
        f"cannot open webcam {text}: camera indices are supported on Linux (v4l2) and macOS "
        f"(avfoundation), not on {sys.platform}"
    )


class WebcamSource(LiveSource):
    """A local camera through FFmpeg's capture devices (v4l2 on Linux)."""

    kind = "webcam"

    def __init__(
        self,
        device: str | int,
        *,
        source_id: str | None = None,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
        timeout_s: float = 5.0,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),
        options: dict[str, str] | None = None,
    ) -> None:
        name, av_format = webcam_device(device)
        av_options: dict[str, str] = {}
        if fps:
            av_options["framerate"] = f"{fps:g}"
        if size:
            av_options["video_size"] = f"{size[0]}x{size[1]}"
        av_options.update(options or {})
        super().__init__(
            name,
            av_format=av_format,
            options=av_options,
            display_name=name,
            source_id=source_id,
            timeout_s=timeout_s,
            reconnect=reconnect,
        )

    def _open_cause(self, error: BaseException) -> str:
        if isinstance(error, FileNotFoundError):
            return "no such device (is a camera connected?)"
        if isinstance(error, PermissionError):
            return "permission denied (is the user in the 'video' group?)"
        return super()._open_cause(error)


# --- lavfi test pictures ----------------------------------------------------------------

LAVFI_PREFIX = "lavfi:"


class LavfiSource(LiveSource):
    """FFmpeg's synthetic video (``lavfi:testsrc2=size=640x480:rate=25``): a camera stand-in.

    Paced to real time by default so that it behaves like a camera (frames arrive at the
    nominal rate, slow consumers fall behind); a graph with ``duration=`` ends like a file.
    """

    kind = "lavfi source"

    def __init__(
        self,
        spec: str,
        *,
        source_id: str | None = None,
        realtime: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        graph = spec[len(LAVFI_PREFIX):] if spec.startswith(LAVFI_PREFIX) else spec
        if not graph:
            raise InputError(f"cannot open lavfi source {spec!r}: empty filter graph")
        super().__init__(
            graph,
            av_format="lavfi",
            options={},
            display_name=f"{LAVFI_PREFIX}{graph}",
            source_id=source_id,
            timeout_s=timeout_s,
            reconnect=None,
            realtime=realtime,
        )
