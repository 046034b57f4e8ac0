"""Encoded video files (PyAV), written atomically.

The output goes to ``<stem>.partial<ext>`` next to the final name (the real extension stays last
so FFmpeg picks the right muxer) and is renamed with ``os.replace`` only when :meth:`close`
succeeds. A crash, a kill or :meth:`VideoWriter.abort` therefore never leaves a half-written
file under the name the user asked for.

Codec ``"auto"`` is H.264 (libx264, ``veryfast``, CRF 23, yuv420p): playable everywhere. Measured
on vtest.avi (768x576, 795 frames) on the 2-core dev machine, colour conversion included:
``veryfast`` ~190 fps and 4.2 MB, ``ultrafast`` ~540 fps but 12.3 MB (3x larger), ``mpeg4`` ~610
fps and 17 MB. ``veryfast`` costs ~5 ms a frame, small beside detection and pose, so the smaller
file wins; pass ``preset="ultrafast"`` when the encoder is the bottleneck. The default preset
also sets x264's ``subme=1`` (subpixel refinement of veryfast's 2): measured on 300 vtest frames,
20-25% less encoder CPU (8.9-10.0 → 6.8-7.3 ms a frame here) for a 0.6% larger file and 0.06 dB
less PSNR (37.09 → 37.03); and ``me=dia`` (diamond motion search instead of hexagon): 300
annotated vtest frames, five alternating runs, median 4.94 → 4.48 ms of CPU a frame, 2.34 →
2.35 MB, PSNR 41.71 → 41.70 dB. An explicit preset is taken as x264 defines it. When the FFmpeg
build lacks libx264 the writer falls back to MPEG-4 Part 2 (``mpeg4``, fixed quantiser 4).

4:2:0 chroma needs even width and height: an odd size is **padded** by repeating the last
column/row (no picture content is lost; the output is at most 1 pixel wider/taller).
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import av.error
import cv2
import numpy as np

from ..errors import ConfigError, InputError
from .base import AtomicOutput

AUTO_CODECS = ("libx264", "mpeg4")
DEFAULT_X264_PRESET = "veryfast"
DEFAULT_X264_CRF = 23
DEFAULT_X264_PARAMS = "subme=1:me=dia"  # with the default preset only (module docstring: measured)
DEFAULT_MPEG4_QSCALE = 4
_FF_QP2LAMBDA = 118  # FFmpeg's factor from a quantiser to its "global_quality" lambda

_WRITE_ERRORS = (av.error.FFmpegError, OSError, ValueError)


def partial_path_for(path: Path) -> Path:
    """``out.mp4`` → ``out.partial.mp4``: same folder (so the rename is atomic), same muxer."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def codec_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def resolve_codec(codec: str) -> str:
    """The encoder to use for ``codec`` ("auto" picks the first available of AUTO_CODECS)."""
    if codec == "auto":
        for candidate in AUTO_CODECS:
            if codec_available(candidate):
                return candidate
        raise ConfigError(f"codec=auto: none of {', '.join(AUTO_CODECS)} is available in this FFmpeg build")
    if not codec_available(codec):
        raise ConfigError(f"codec={codec}: this FFmpeg build has no such video encoder")
    return codec


def as_rate(fps: float | Fraction) -> Fraction:
    """An exact frame rate; floats like 29.97 become the NTSC fraction 30000/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        rate = Fraction(fps).limit_denominator(1001)
        ntsc = Fraction(round(float(fps) * 1.001) * 1000, 1001)
        if abs(float(ntsc) - float(fps)) < 1e-3 and rate.denominator != 1:
            rate = ntsc
    if rate <= 0:
        raise ConfigError(f"fps must be positive, got {float(rate):g}")
    return rate


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    return width + width % 2, height + height % 2


class VideoWriter(AtomicOutput):
    """Encode BGR frames into a video file with the source's size, rate and frame count.

    Use from one thread at a time (a lock guards against a stray ``close`` from another).
    ``with VideoWriter(...)`` closes normally on success and on KeyboardInterrupt (a valid
    shorter file is what a user who pressed Ctrl-C wants), and aborts on any other exception
    (a failed run must not leave an output that looks complete).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction,
        size: tuple[int, int],
        *,
        codec: str = "auto",
        crf: int | None = None,
        preset: str | None = None,
        time_base: Fraction | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.suffix:
            raise ConfigError(f"cannot write video {self.path}: give it an extension such as .mp4")
        width, height = size
        if width <= 0 or height <= 0:
            raise ConfigError(f"cannot write video {self.path}: invalid size {width}x{height}")
        self.partial_path = partial_path_for(self.path)
        self.codec = resolve_codec(codec)
        self.rate = as_rate(fps)
        self.time_base = Fraction(time_base) if time_base else 1 / self.rate
        self.input_size = (width, height)
        self.size = even_size(self.input_size)
        self.frames_written = 0
        self._lock = threading.Lock()
        self._finished = False
        self._first_pts: float | None = None
        self._last_ticks: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.partial_path), mode="w")
            self._stream = self._container.add_stream(self.codec, rate=self.rate)
            self._configure_stream(crf, preset, options or {})
        except _WRITE_ERRORS as error:
            self._discard_partial()
            raise InputError(f"cannot write video {self.path}: {_cause(error)}") from None

    def _configure_stream(self, crf: int | None, preset: str | None, options: dict[str, str]) -> None:
        stream = self._stream
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        codec_options: dict[str, str] = {}
        if self.codec in ("libx264", "h264"):
            codec_options["preset"] = preset or DEFAULT_X264_PRESET
            if preset is None:
                codec_options["x264-params"] = DEFAULT_X264_PARAMS
            codec_options["crf"] = str(DEFAULT_X264_CRF if crf is None else crf)
        elif self.codec == "mpeg4":
            # FFmpeg's mpeg4 default is 200 kb/s, blocky at 768x576; a fixed quantiser is not.
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = (crf or DEFAULT_MPEG4_QSCALE) * _FF_QP2LAMBDA
        codec_options.update(options)
        stream.codec_context.options = codec_options

    def write(self, image: np.ndarray, pts_seconds: float | None = None) -> None:
        """Encode one BGR frame; ``pts_seconds`` is the source's timestamp (else index / fps)."""
        with self._lock:
            if self._finished:
                raise InputError(f"cannot write video {self.path}: the writer is already closed")
            # OpenCV's BGR→I420 (BT.601, limited range, like swscale's default) is ~3x faster
            # than PyAV's reformat, which would otherwise cost more than the encoder.
            yuv = cv2.cvtColor(self._fit(image), cv2.COLOR_BGR2YUV_I420)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = self._next_ticks(pts_seconds)
            frame.time_base = self.time_base
            try:
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            except _WRITE_ERRORS as error:
                self._abort_locked()
                raise InputError(f"cannot write video {self.path}: {_cause(error)}") from None
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and move it to its final name.

        With no frame written there is nothing worth keeping: the partial file is removed and
        no output appears (check :attr:`frames_written`).
        """
        with self._lock:
            if self._finished:
                return
            if self.frames_written == 0:
                self._abort_locked()
                return
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
                self._finished = True
                os.replace(self.partial_path, self.path)
            except _WRITE_ERRORS as error:
                self._abort_locked()
                raise InputError(f"cannot write video {self.path}: {_cause(error)}") from None


    def _abort_locked(self) -> None:
        if not self._finished:
            self._finished = True
            try:
                self._container.close()
            except _WRITE_ERRORS:
                pass
        self._discard_partial()

    def _discard_partial(self) -> None:
        try:
            self.partial_path.unlink()
        except OSError:  # already gone, or its folder never existed
            pass

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """Check the frame matches the video and pad odd sizes to even (edge pixels repeated)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"cannot write video {self.path}: frames must be HxWx3 uint8 BGR, got "
                f"{image.shape} {image.dtype}"
            )
        height, width = image.shape[:2]
        if (width, height) != self.input_size:
            raise InputError(
                f"cannot write video {self.path}: frame {self.frames_written} is {width}x{height}, "
                f"the video is {self.input_size[0]}x{self.input_size[1]}"
            )
        pad_right, pad_bottom = self.size[0] - width, self.size[1] - height
        if pad_right or pad_bottom:
            image = np.pad(image, ((0, pad_bottom), (0, pad_right), (0, 0)), mode="edge")
        return image

    def _next_ticks(self, pts_seconds: float | None) -> int:
        """Timestamp in time-base ticks, starting at 0 and strictly increasing.

        Source timestamps are rebased to the first frame (an output starting late would get an
        edit list some players ignore) and nudged forward when they would not increase (a live
        source's jitter, or time going back across a reconnect).
        """
        if pts_seconds is None:
            ticks = round(self.frames_written / self.rate / self.time_base)
        else:
            if self._first_pts is None:
                self._first_pts = pts_seconds
            ticks = round((pts_seconds - self._first_pts) / self.time_base)
        if self._last_ticks is not None and ticks <= self._last_ticks:
            ticks = self._last_ticks + 1
        self._last_ticks = ticks
        return ticks


    def __del__(self) -> None:
        # An abandoned writer leaves no partial file behind (best effort; close() is the contract).
        if getattr(self, "_finished", True) is False:
            try:
                self.abort()
            except Exception:  # noqa: BLE001 - nothing useful to do during garbage collection
                pass


def _cause(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).strip().rstrip(".")
