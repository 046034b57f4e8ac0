"""Turn what users pass to ``predict`` into images: arrays, files, folders, URLs and lists.

Everything is checked before the first image is processed, so a typo in the fifth path of a list
fails at once with one line, instead of after four outputs were written.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streampose.errors import InputError

IMAGE_SUFFIXES = (".bmp", ".dib", ".jpeg", ".jpg", ".png", ".webp", ".pbm", ".pgm", ".ppm",
                  ".pnm", ".sr", ".ras", ".tif", ".tiff")
URL_TIMEOUT_S = 15.0
URL_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class ImageItem:
    """One input image: where it came from (None for arrays) and its BGR pixels, read lazily."""

    input_path: str | None
    array: np.ndarray | None = None

    def load(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        return read_image(Path(self.input_path))


def read_image(path: Path) -> np.ndarray:
    """Read an image file as BGR uint8; a clear error when it is not an image."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"input {path}: cannot be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise InputError(f"input {path}: file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"input {path}: not a readable image (unknown or corrupt format)")
    return image


def check_array(array: np.ndarray, name: str = "array input") -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 numpy array, got {getattr(array, 'dtype', type(array))}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: expected an HxWx3 BGR image, got shape {array.shape}")
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return array


def download_input(url: str, cache_dir: Path, timeout: float = URL_TIMEOUT_S,
                   max_bytes: int = URL_MAX_BYTES) -> Path:
    """Fetch an http(s) image to ``cache_dir/predict_input/<basename>`` (as PaddleX does)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InputError(f"input {url}: only http:// and https:// URLs are accepted")
    name = Path(urllib.parse.unquote(parsed.path)).name or "download"
    target = cache_dir / "predict_input" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "streampose"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if urllib.parse.urlparse(response.geturl()).scheme not in ("http", "https"):
                raise InputError(f"input {url}: redirected to a non-http URL")
            handle, temp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
            received = 0
            with os.fdopen(handle, "wb") as stream:
                while chunk := response.read(1 << 16):
                    received += len(chunk)
                    if received > max_bytes:
                        Path(temp_name).unlink(missing_ok=True)
                        raise InputError(f"input {url}: larger than {max_bytes // (1024 * 1024)} MiB")
                    stream.write(chunk)
            os.replace(temp_name, target)
    except urllib.error.HTTPError as exc:
        raise InputError(f"input {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"input {url}: cannot be fetched ({exc.reason})") from None
    except (TimeoutError, OSError) as exc:
        raise InputError(f"input {url}: cannot be fetched ({exc})") from None
    return target


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


def collect_inputs(spec: object, cache_dir: Path) -> list[ImageItem]:
    """Expand ``spec`` into image items, in order, validating paths up front."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise InputError("input: the list of inputs is empty")
    items: list[ImageItem] = []
    for entry in specs:
        if isinstance(entry, np.ndarray):
            items.append(ImageItem(None, check_array(entry)))
            continue
        if isinstance(entry, os.PathLike):
            entry = os.fspath(entry)
        if not isinstance(entry, str):
            raise InputError(f"input {entry!r}: unsupported type {type(entry).__name__} "
                             "(use a path, URL, directory or numpy array)")
        lowered = entry.lower()
        if lowered.startswith("file:"):
            raise InputError(f"input {entry}: file:// URLs are not accepted; pass the local path instead")
        if lowered.startswith(("http://", "https://")):
            items.append(ImageItem(str(download_input(entry, cache_dir))))
            continue
        if "://" in entry:
            raise InputError(f"input {entry}: unsupported URL scheme (only http and https)")
        path = Path(entry).expanduser()
        if path.is_dir():
            found = _images_in(path)
            if not found:
                raise InputError(f"input {path}: directory holds no image files ({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
            items.extend(ImageItem(str(found_path)) for found_path in found)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"input {path}: not an image file type ({path.suffix or 'no suffix'}); "
                                 "for videos use 'streampose run --source'")
            items.append(ImageItem(str(path)))
        elif path.exists():
            raise InputError(f"input {path}: not a regular file or directory")
        else:
            raise InputError(f"input {path}: no such file or directory")
    return items


def iter_batches(items: list[ImageItem], batch_size: int) -> Iterator[list[ImageItem]]:
    batch_size = max(1, int(batch_size))
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]
