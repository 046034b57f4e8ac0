"""What every frame source hands downstream, and the contract a source keeps.

A frame carries its source id so that one graph can mix several cameras and still keep
per-source state (tracker, smoother, sink) apart; its image is always a C-contiguous BGR
``uint8`` array because every consumer (OpenCV, the model preprocessors, the encoder) wants
exactly that and a strided view would force each of them to copy.
"""

from __future__ import annotations

import abc
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Iterator

import numpy as np


@dataclass
class Frame:
    """One decoded picture, tagged with where and when it came from."""

    source_id: str
    index: int
    pts: float | None
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order video tools and the encoder use."""
        height, width = self.image.shape[:2]
        return width, height


@dataclass
class SourceStats:
    """Counters a progress bar or a health check reads while the source runs.

    Plain integers updated by the reading thread; readers in other threads may see a value
    one frame old, which is fine for reporting. ``dropped`` is for the consumer: a live graph
    that discards frames it cannot keep up with counts them here, so one place reports them.
    """

    frames_read: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "frames_read": self.frames_read,
            "decode_errors": self.decode_errors,
            "reconnects": self.reconnects,
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class StreamInfo:
    """Timing facts an encoder needs to reproduce the source's clock exactly.

    ``rate`` is a Fraction so that NTSC rates such as 30000/1001 survive; ``time_base`` is the
    unit of the source's own timestamps (``Frame.pts`` is already converted to seconds).
    """

    rate: Fraction | None = None
    time_base: Fraction | None = None
    codec: str | None = None


class FrameSource(abc.ABC):
    """An iterable of :class:`Frame` with the facts a caller needs before the first frame.

    Sources open their input in the constructor so a bad path or URL fails before any
    processing starts. Iterate once; call :meth:`close` (or use ``with``) when done.
    """

    source_id: str
    is_live: bool = False

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.stats = SourceStats()
        self.decode_error: str | None = None
        self._stop_requested = threading.Event()
        self._reader_lock = threading.Lock()
        self._reader_thread: int | None = None
        self._release_pending = False

    @property
    @abc.abstractmethod
    def fps(self) -> float | None:
        """Nominal frames per second, None when the input does not say."""

    @property
    @abc.abstractmethod
    def frame_count(self) -> int | None:
        """Total frames when known in advance (for progress and ETA), else None."""

    @property
    @abc.abstractmethod
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the frames, None when not known before decoding."""

    @property
    def stream_info(self) -> StreamInfo:
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps else None
        return StreamInfo(rate=rate)

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in order, indices counting from 0."""
        with self._reader_lock:
            self._reader_thread = threading.get_ident()
        try:
            yield from self._frames()
        finally:
            with self._reader_lock:
                self._reader_thread = None
                release = self._release_pending
            if release:
                self._release()

    @abc.abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """The source's own frame loop; it should return soon after ``stop_requested``."""

    def _release(self) -> None:
        """Free the input (decoder, sockets); called once no thread is reading. Idempotent."""

    def skip_backlog(self) -> None:
        """Drop what a live input buffered while it was open but not read; files keep it all.

        Called by the graph just before its first read. Nothing to do by default.
        """

    def stop(self) -> None:
        """Ask a running iteration (possibly in another thread) to end at the next frame."""
        self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def close(self) -> None:
        """Stop and release the input; safe to call more than once and from any thread.

        Called from another thread while a read is in progress, it only stops the iteration
        and leaves the release to the reading thread on its way out: freeing an FFmpeg
        context that a read is still using would crash the process.
        """
        self.stop()
        with self._reader_lock:
            reader = self._reader_thread
            if reader is not None and reader != threading.get_ident():
                self._release_pending = True
                return
        self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_id!r})"


_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def redact_url(url: str) -> str:
    """Drop ``user:password@`` from a URL: source ids end up in JSON files and error lines."""
    return _CREDENTIALS.sub(r"\1", url)


def as_contiguous_bgr(image: np.ndarray) -> np.ndarray:
    """Return ``image`` itself when already C-contiguous, else a packed copy."""
    return image if image.flags["C_CONTIGUOUS"] else np.ascontiguousarray(image)


def describe_error(error: BaseException) -> str:
    """A short cause for one-line messages: FFmpeg's text without the errno and path noise."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).strip().rstrip(".")


__all__ = [
    "Frame",
    "FrameSource",
    "SourceStats",
    "StreamInfo",
    "as_contiguous_bgr",
    "describe_error",
    "redact_url",
]
