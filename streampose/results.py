"""PaddleX-compatible result objects: a dict that prints, saves and converts itself.

Same keys, file names and JSON as PaddleX's ``KptResult`` (paddlex-compat §1.3, §2), so code
written against PaddleX keeps working. Files are written to a temporary name and renamed into
place, so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import json
import mimetypes
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def to_json_ready(value: Any) -> Any:
    """numpy scalars/arrays, Paths and tuples → plain JSON types (PaddleX's ``_format_data``)."""
    if isinstance(value, dict):
        return {str(key): to_json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return value.as_posix()
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _has_mime(path: str, kind: str) -> bool:
    mime, _ = mimetypes.guess_type(path)
    return bool(mime) and (mime.startswith(kind) if kind.endswith("/") else mime == kind)


class KptResult(dict):
    """One image's persons: ``input_path``, ``boxes`` (and ``input_img`` in memory only)."""

    _HIDDEN_KEYS = ("input_img",)

    def __init__(self, data: dict) -> None:
        super().__init__(data)
        self._generated_stem: str | None = None

    # -- conversions -------------------------------------------------------------------------
    def _public(self) -> dict:
        return {key: value for key, value in self.items() if key not in self._HIDDEN_KEYS}

    @property
    def json(self) -> dict:
        """``{"res": <the saved JSON content>}``."""
        return {"res": to_json_ready(self._public())}

    @property
    def str(self) -> dict:
        return {"res": self._format_str()}

    def _format_str(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> str:
        if json_format:
            return json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii)
        with np.printoptions(precision=8, suppress=True, threshold=200):
            return repr({"res": self._public()})

    @property
    def img(self) -> dict:
        """``{"res": PIL.Image}``: the PaddleX-style skeleton picture (RGB)."""
        from PIL import Image  # noqa: PLC0415

        return {"res": Image.fromarray(np.ascontiguousarray(self.visualize()[..., ::-1]))}

    def visualize(self) -> np.ndarray:
        """The skeleton picture as a BGR array (no boxes, as PaddleX draws it)."""
        from streampose.render import draw_paddlex_keypoints  # noqa: PLC0415

        image = self.get("input_img")
        if image is None:
            raise ValueError("this result carries no input image to draw on")
        return draw_paddlex_keypoints(image, [box["keypoints"] for box in self.get("boxes", [])])

    # -- printing and saving -----------------------------------------------------------------
    def print(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> None:
        print(self._format_str(json_format, indent, ensure_ascii), flush=True)

    def _stem(self) -> str:
        input_path = self.get("input_path")
        if input_path:
            return Path(str(input_path)).stem
        if self._generated_stem is None:
            self._generated_stem = f"{int(time.time())}_{random.randint(1000, 9999)}"
        return self._generated_stem

    def _image_suffix(self) -> str:
        input_path = self.get("input_path")
        if input_path:
            suffix = Path(str(input_path)).suffix.lower()
            if suffix in IMAGE_SUFFIXES and suffix not in (".gif", ".tif", ".tiff"):
                return suffix
        return ".png"

    def save_to_json(self, save_path: str | os.PathLike, indent: int = 4, ensure_ascii: bool = False,
                     *args: Any, **kwargs: Any) -> Path:
        target = Path(save_path)
        if not _has_mime(str(target), "application/json"):
            target = target / f"{self._stem()}_res.json"
        text = json.dumps(to_json_ready(self._public()), indent=indent, ensure_ascii=ensure_ascii)
        atomic_write_bytes(target, text.encode("utf-8"))
        return target

    def save_to_img(self, save_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Path:
        target = Path(save_path)
        if not _has_mime(str(target), "image/"):
            target = target / f"{self._stem()}_res{self._image_suffix()}"
        import io  # noqa: PLC0415

        buffer = io.BytesIO()
        image = self.img["res"]
        image_format = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(
            target.suffix.lower(), "PNG")
        image.save(buffer, format=image_format)
        atomic_write_bytes(target, buffer.getvalue())
        return target

    def save_all(self, save_path: str | os.PathLike) -> list[Path]:
        return [self.save_to_json(save_path), self.save_to_img(save_path)]

    def __repr__(self) -> str:
        return self._format_str()
