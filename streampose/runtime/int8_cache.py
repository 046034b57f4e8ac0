"""Where the INT8 copies that ``streampose models quantize`` makes are kept and found.

The OpenVINO backend only needs to find a copy; making one (NNCF, calibration data) lives in
:mod:`streampose.models.quantize`. Copies are keyed by the content of the float model they were
made from, so replaced weights never meet a stale INT8 copy, and model folders are never written.
"""

from __future__ import annotations

from pathlib import Path

from streampose.runtime.base import ModelFiles
from streampose.runtime.onnx_export import cache_home, content_hash

INT8 = "int8"
INT8_FILE_NAME = "model.xml"
# Bumped when the recipe below changes, so older INT8 copies are not picked up as current.
RECIPE_VERSION = "nncf-ptq-1"


def int8_fingerprint(files: ModelFiles, float_source: Path) -> str:
    """Short content hash of the float model behind ``float_source`` (+ the recipe).

    The shipped IR is hashed when there is one; otherwise the Paddle graph and weights (the ONNX
    export and its pre-NMS cut are derived from them). ``float_source``'s name tells those
    derived graphs apart (a detector's whole graph vs its pre-NMS part).
    """
    if files.openvino_xml is not None:
        parts = (files.openvino_xml, files.openvino_xml.with_suffix(".bin"))
    else:
        parts = (files.graph, files.params) if files.params.is_file() else (files.graph,)
    return content_hash(parts, f"{float_source.name}\0{RECIPE_VERSION}")


def cached_int8_path(files: ModelFiles, float_source: Path) -> Path:
    """Where the cache keeps (or will keep) the INT8 copy of this model."""
    folder_name = f"{files.model_dir.name}-{int8_fingerprint(files, float_source)}"
    return cache_home() / INT8 / folder_name / INT8_FILE_NAME


def find_int8_model(files: ModelFiles, float_source: Path) -> Path | None:
    """The cached INT8 IR of this model, if ``streampose models quantize`` made one."""
    path = cached_int8_path(files, float_source)
    return path if path.is_file() and path.with_suffix(".bin").is_file() else None
