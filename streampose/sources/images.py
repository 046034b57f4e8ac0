"""A folder, a glob or a single image file, played as a video at a frame rate the user picks.

Images are ordered the way people number them (``frame2`` before ``frame10``). One unreadable
image does not end the sequence: it is skipped, counted and named in ``decode_error``, the same
contract as a damaged video file.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import InputError
from .base import Frame, FrameSource, as_contiguous_bgr

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
GLOB_CHARACTERS = frozenset("*?[")
DEFAULT_IMAGE_FPS = 25.0


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def looks_like_glob(spec: str) -> bool:
    return any(character in spec for character in GLOB_CHARACTERS)


def natural_key(path: Path) -> list[object]:
    """Sort key treating digit runs as numbers, so ``img9`` sorts before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def find_images(spec: str | os.PathLike[str]) -> list[Path]:
    """The image files a folder, glob or single path names, in natural order."""
    text = os.fspath(spec)
    if looks_like_glob(text):
        matches = [Path(match) for match in glob.glob(text)]
        found = [path for path in matches if path.is_file() and is_image_file(path)]
    else:
        path = Path(text)
        if path.is_dir():
            found = [child for child in path.iterdir() if child.is_file() and is_image_file(child)]
        elif path.is_file():
            found = [path]
        else:
            raise InputError(f"cannot open images {text}: no such file or folder")
    if not found:
        raise InputError(f"cannot open images {text}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sorted(found, key=natural_key)


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image to BGR uint8; None when the file is not a readable image.

    ``imdecode`` on the raw bytes instead of ``imread`` because ``imread`` cannot open
    non-ASCII paths on Windows.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if image is None else as_contiguous_bgr(image)


class ImageSequenceSource(FrameSource):
    """Frames from image files, timed at ``fps`` (default 25)."""

    is_live = False

    def __init__(
        self,
        spec: str | os.PathLike[str] | Sequence[os.PathLike[str]],
        *,
        fps: float | None = None,
        source_id: str | None = None,
    ) -> None:
        if isinstance(spec, (str, os.PathLike)):
            name = os.fspath(spec)
            paths = find_images(spec)
        else:
            paths = [Path(item) for item in spec]
            name = os.fspath(paths[0].parent) if paths else "[]"
            if not paths:
                raise InputError("cannot open images []: the list of image files is empty")
        super().__init__(source_id or name)
        if fps is not None and fps <= 0:
            raise InputError(f"cannot open images {name}: fps must be positive, got {fps:g}")
        self._fps = float(fps or DEFAULT_IMAGE_FPS)
        self._paths = paths
        self._first_image = read_image(paths[0])
        self._size: tuple[int, int] | None = None
        if self._first_image is not None:
            height, width = self._first_image.shape[:2]
            self._size = (width, height)

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int:
        return len(self._paths)

    @property
    def size(self) -> tuple[int, int] | None:
        return self._size

    def _frames(self) -> Iterator[Frame]:
        index = 0
        for position, path in enumerate(self._paths):
            if self.stop_requested:
                return
            image = self._first_image if position == 0 else read_image(path)
            if image is None:
                self.stats.decode_errors += 1
                if self.decode_error is None:
                    self.decode_error = f"skipped unreadable image {path}"
                continue
            self.stats.frames_read += 1
            yield Frame(self.source_id, index, index / self._fps, image)
            index += 1
        self._first_image = None
