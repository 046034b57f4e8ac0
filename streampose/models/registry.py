"""Turn a model name (or folder) into a model folder on disk.

Users arrive with different habits: a folder they exported themselves, an offline model home
shared by a team (``STREAMPOSE_MODEL_HOME``), models an earlier run downloaded, or models PaddleX
itself already cached. Looking in that order means an explicit choice always wins, nothing is
downloaded when a usable copy exists, and only the four official PaddleX names ever trigger a
download.
"""

from __future__ import annotations

import os
from pathlib import Path

from streampose.errors import ModelError
from streampose.models.download import download_official_model
from streampose.models.folder import find_model_files
from streampose.runtime.base import ModelFiles

MODEL_HOME_ENV = "STREAMPOSE_MODEL_HOME"
CACHE_HOME_ENV = "STREAMPOSE_CACHE_HOME"
PADDLEX_CACHE_ENV = "PADDLE_PDX_CACHE_HOME"

# The PaddleX official inference models of the human_keypoint_detection pipeline (BOS-hosted).
OFFICIAL_MODELS: tuple[str, ...] = (
    "PP-TinyPose_128x96",
    "PP-TinyPose_256x192",
    "PP-YOLOE-S_human",
    "PP-YOLOE-L_human",
)


def model_home() -> Path | None:
    """The offline model home, a folder holding ``<model_name>/`` folders, if the user set one."""
    value = os.environ.get(MODEL_HOME_ENV)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloaded models live: ``models/`` under streampose's cache root.

    The root is ``$STREAMPOSE_CACHE_HOME`` (default ``~/.cache/streampose``); ONNX exports and
    downloaded inputs live beside ``models/`` under the same root.
    """
    value = os.environ.get(CACHE_HOME_ENV)
    root = Path(value).expanduser() if value else Path.home() / ".cache" / "streampose"
    return root / "models"


def paddlex_models_dir() -> Path:
    """PaddleX's own download cache, reused so PaddleX users do not download twice."""
    value = os.environ.get(PADDLEX_CACHE_ENV)
    base = Path(value).expanduser() if value else Path.home() / ".paddlex"
    return base / "official_models"


def resolve_model_dir(model_name: str | None, model_dir: str | Path | None, *, allow_download: bool = True) -> Path:
    """Pick the folder to load: explicit ``model_dir``, then model home, our cache, PaddleX's cache, download.

    The folder is returned as found; :func:`load_model_files` checks its contents, so a broken
    folder the user pointed at is reported as such instead of being silently skipped.
    """
    if model_dir is not None:
        folder = Path(model_dir).expanduser()
        if not folder.exists():
            raise ModelError(f"model folder {folder}: does not exist")
        if not folder.is_dir():
            raise ModelError(f"model folder {folder}: is not a directory")
        return folder
    if not model_name:
        raise ModelError("no model given: pass a model name or a model folder (--model_dir)")
    if "/" in model_name or "\\" in model_name or model_name in {".", ".."}:
        raise ModelError(f"model name {model_name!r}: not a plain name; pass a folder as model_dir instead")

    searched = _search_folders()
    for base in searched:
        candidate = base / model_name
        if candidate.is_dir():
            return candidate

    looked = ", ".join(str(base / model_name) for base in searched)
    hint = f"point at its folder with --model_dir or {MODEL_HOME_ENV}=<folder holding {model_name}/>"
    if model_name not in OFFICIAL_MODELS:
        raise ModelError(
            f"model {model_name}: not found (looked in {looked}) and not an official download "
            f"({', '.join(OFFICIAL_MODELS)}); {hint}"
        )
    if not allow_download:
        raise ModelError(f"model {model_name}: not found (looked in {looked}) and downloads are off; {hint}")
    return download_official_model(model_name, cache_dir())


def load_model_files(
    model_name: str | None, model_dir: str | Path | None, *, allow_download: bool = True
) -> ModelFiles:
    """Resolve the folder (downloading an official model if needed) and locate its files."""
    return find_model_files(resolve_model_dir(model_name, model_dir, allow_download=allow_download))


def _search_folders() -> list[Path]:
    """The bases searched for ``<model_name>/``, in priority order, without duplicates."""
    bases = [model_home(), cache_dir(), paddlex_models_dir()]
    unique: list[Path] = []
    for base in bases:
        if base is not None and base not in unique:
            unique.append(base)
    return unique
