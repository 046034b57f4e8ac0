"""Video files and HTTP(S) video URLs, decoded with PyAV.

Files are not live: every frame is delivered, in order. A damaged file must not cost the user
the output of its good part, so a read failure or an early end does not raise; it ends the
iteration and leaves a one-line explanation in :attr:`VideoFileSource.decode_error`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av.error

from ..errors import InputError
from . import _pyav
from .base import Frame, FrameSource, StreamInfo, as_contiguous_bgr, describe_error, redact_url

URL_SCHEMES = ("http://", "https://")


class VideoFileSource(FrameSource):
    """Frames of a video file or an HTTP(S) video URL (any container and codec FFmpeg reads)."""

    is_live = False

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        source_id: str | None = None,
        options: dict[str, str] | None = None,
        timeout_s: float = 15.0,
        thread_type: str = "AUTO",
    ) -> None:
        text = os.fspath(location)
        self._is_url = text.lower().startswith(URL_SCHEMES)
        self._display_name = redact_url(text) if self._is_url else text
        super().__init__(source_id or self._display_name)
        if not self._is_url:
            _check_readable_file(Path(text))
        try:
            self._container = _pyav.open_container(text, options=options, timeout_s=timeout_s)
        except _pyav.READ_ERRORS as error:
            raise InputError(f"cannot open video {self._display_name}: {_open_cause(error)}") from None
        stream = _pyav.first_video_stream(self._container)
        if stream is None:
            _pyav.close_quietly(self._container)
            raise InputError(f"cannot open video {self._display_name}: it contains no video stream")
        _pyav.enable_threaded_decoding(stream, thread_type)
        self._stream = stream
        self._rate = _pyav.stream_rate(stream)
        self._closed = False

    @property
    def fps(self) -> float | None:
        return float(self._rate) if self._rate else None

    @property
    def frame_count(self) -> int | None:
        return self._stream.frames or None

    @property
    def size(self) -> tuple[int, int] | None:
        width, height = self._stream.codec_context.width, self._stream.codec_context.height
        return (width, height) if width and height else None

    @property
    def stream_info(self) -> StreamInfo:
        time_base = Fraction(self._stream.time_base) if self._stream.time_base else None
        return StreamInfo(rate=self._rate, time_base=time_base, codec=self._stream.codec_context.name)

    def _frames(self) -> Iterator[Frame]:
        if self._closed:
            raise InputError(f"video {self._display_name} is already closed")
        index = 0
        time_base = Fraction(self._stream.time_base) if self._stream.time_base else None
        causes: list[str] = []
        clock = _pyav.TimestampGuesser(time_base, prefer_dts=self._container.format.name == "avi")
        try:
            for av_frame in _pyav.decode_video(self._container, self._stream, self.stats, causes):
                pts = clock.seconds(av_frame)
                if pts is None and self._rate:
                    pts = float(index / self._rate)
                image = as_contiguous_bgr(av_frame.to_ndarray(format="bgr24"))
                self.stats.frames_read += 1
                yield Frame(self.source_id, index, pts, image)
                index += 1
                if self.stop_requested:
                    return
        except _pyav.TooManyDecodeErrors as error:
            self.decode_error = f"stopped after frame {index}: {error} ({causes[0]})"
            return
        except _pyav.READ_ERRORS as error:
            self.decode_error = f"read error after {index} frames: {describe_error(error)}"
            return
        self.decode_error = self._explain_short_read(index, causes)

    def _explain_short_read(self, delivered: int, causes: list[str]) -> str | None:
        """Name what went wrong when decoding ended cleanly but not completely."""
        expected = self.frame_count
        if expected and delivered < expected:
            return (
                f"stream ended after {delivered} of the {expected} frames its header announces "
                "(damaged or truncated file?)"
            )
        if self.stats.decode_errors:
            return f"{self.stats.decode_errors} packets could not be decoded (first: {causes[0]})"
        return None

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            _pyav.close_quietly(self._container)


def _check_readable_file(path: Path) -> None:
    """Name the usual mistakes before FFmpeg turns them into vaguer messages."""
    if not path.exists():
        raise InputError(f"cannot open video {path}: no such file")
    if path.is_dir():
        raise InputError(f"cannot open video {path}: it is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot open video {path}: permission denied")
    if path.stat().st_size == 0:
        raise InputError(f"cannot open video {path}: the file is empty")


def _open_cause(error: BaseException) -> str:
    if isinstance(error, av.error.InvalidDataError):
        return "not a video FFmpeg can read (invalid data)"
    if isinstance(error, av.error.HTTPNotFoundError):
        return "HTTP 404 not found"
    if isinstance(error, (TimeoutError, av.error.ExitError)):
        return "timed out"
    return describe_error(error)
