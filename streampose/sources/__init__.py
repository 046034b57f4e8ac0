"""Frame sources: turn whatever the user typed as input into an iterable of :class:`Frame`.

``open_source`` is the one place that decides what kind of input a string names, so the CLI,
the Python API and the HTTP service all agree on it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from .base import Frame, FrameSource, SourceStats, StreamInfo, redact_url
from .images import IMAGE_EXTENSIONS, ImageSequenceSource, is_image_file, looks_like_glob
from .live import (
    LAVFI_PREFIX,
    RTSP_SCHEMES,
    LavfiSource,
    LiveSource,
    ReconnectPolicy,
    RtspSource,
    WebcamSource,
)
from .video import URL_SCHEMES, VideoFileSource

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
        ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".vob",
    }
)

_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def open_source(spec: str | int | os.PathLike[str], *, fps: float | None = None, **options: Any) -> FrameSource:
    """Open ``spec`` as the right kind of source; raise InputError when it cannot be used.

    * ``0``, ``"0"``, ``"/dev/video0"``: webcam (``fps`` = requested capture rate)
    * ``rtsp://…``, ``rtsps://…``: RTSP with reconnect
    * ``lavfi:testsrc2=size=640x480:rate=25``: FFmpeg test picture, paced like a camera
    * ``http(s)://…``: a video file over HTTP (not live)
    * a folder, a glob or an image file: images played at ``fps`` (default 25)
    * any other path: a video file

    ``options`` go to the chosen source's constructor (e.g. ``reconnect=ReconnectPolicy(...)``,
    ``timeout_s``, ``source_id``).
    """
    if isinstance(spec, bool):
        raise InputError(f"cannot open source {spec!r}: expected a path, URL or camera index")
    if isinstance(spec, int):
        return WebcamSource(spec, fps=fps, **options)
    text = os.fspath(spec).strip()
    if not text:
        raise InputError("cannot open source '': the input is empty")
    lowered = text.lower()
    live_kind = _live_kind(text)
    if live_kind == "webcam":
        return WebcamSource(text, fps=fps, **options)
    if live_kind == "lavfi":
        _reject_fps(fps, text)
        return LavfiSource(text, **options)
    if live_kind == "rtsp":
        _reject_fps(fps, text)
        return RtspSource(text, **options)
    if lowered.startswith(URL_SCHEMES):
        _reject_fps(fps, text)
        return VideoFileSource(text, **options)
    if lowered.startswith("file://"):
        raise InputError(f"cannot open source {text}: file:// URLs are not supported; pass the path itself")
    if _URL_SCHEME.match(text):
        raise InputError(
            f"cannot open source {redact_url(text)}: unsupported URL scheme "
            "(use rtsp://, rtsps://, http:// or https://)"
        )
    path = Path(text)
    if path.is_dir():
        if not any(is_image_file(child) for child in path.iterdir()) and list_video_files(path):
            raise InputError(
                f"cannot open source {text}: it is a folder of videos; process them one by one "
                "(list_video_files) or name one file"
            )
        return ImageSequenceSource(path, fps=fps, **options)
    if (looks_like_glob(text) and not path.exists()) or is_image_file(path):
        return ImageSequenceSource(text, fps=fps, **options)
    _reject_fps(fps, text)
    return VideoFileSource(path, **options)


def names_live_source(spec: object) -> bool:
    """Whether :func:`open_source` would open ``spec`` as a live source (webcam, RTSP, lavfi),
    decided without opening it: the graph prepares its models before a camera starts streaming."""
    if isinstance(spec, bool):
        return False
    if isinstance(spec, int):
        return True
    if not isinstance(spec, (str, os.PathLike)):
        return False
    return _live_kind(os.fspath(spec).strip()) is not None


def _live_kind(text: str) -> str | None:
    """The kind of live source a (stripped) spec names, or None for files, URLs and images."""
    lowered = text.lower()
    if text.isdigit() or lowered.startswith("/dev/video"):
        return "webcam"
    if lowered.startswith(LAVFI_PREFIX):
        return "lavfi"
    if lowered.startswith(RTSP_SCHEMES):
        return "rtsp"
    return None


def list_video_files(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Video files in ``folder`` (by extension), sorted by path, for batch processing."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"cannot list videos in {root}: not a folder")
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        path for path in candidates if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS
    )


def _reject_fps(fps: float | None, spec: str) -> None:
    """A video or stream has its own clock; silently ignoring a user's fps would mislead."""
    if fps is not None:
        raise ConfigError(
            f"fps={fps:g} cannot be applied to {redact_url(spec)}: it sets the rate of images and "
            "webcams only; videos and streams keep their own"
        )


__all__ = [
    "Frame",
    "FrameSource",
    "IMAGE_EXTENSIONS",
    "ImageSequenceSource",
    "LavfiSource",
    "LiveSource",
    "ReconnectPolicy",
    "RtspSource",
    "SourceStats",
    "StreamInfo",
    "VIDEO_EXTENSIONS",
    "VideoFileSource",
    "WebcamSource",
    "list_video_files",
    "names_live_source",
    "open_source",
]
