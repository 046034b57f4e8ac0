"""Find the files of an exported model folder, in every layout users have on disk.

PaddleX 3 exports ``inference.json`` (or ``inference.pdmodel`` from Paddle 2.x),
``inference.pdiparams`` and ``inference.yml``; classic PaddleDetection exports use ``model.*`` and
``infer_cfg.yml``, sometimes one folder down. Extra files (``.pdiparams.info``, ``openvino/``,
``inference.onnx``) are tolerated and picked up when a backend can use them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from streampose.errors import ModelError
from streampose.runtime.base import ModelFiles

_LAYOUTS = (
    ("inference", "inference.yml"),
    ("model", "infer_cfg.yml"),
)


def _find_in(folder: Path) -> ModelFiles | None:
    for prefix, config_name in _LAYOUTS:
        graph = next(
            (folder / f"{prefix}{ext}" for ext in (".json", ".pdmodel") if (folder / f"{prefix}{ext}").is_file()),
            None,
        )
        onnx = folder / f"{prefix}.onnx"
        params = folder / f"{prefix}.pdiparams"
        config = folder / config_name
        if graph is None and not onnx.is_file():
            continue
        if graph is not None and not params.is_file():
            raise ModelError(f"model folder {folder}: {graph.name} has no {params.name} beside it")
        if not config.is_file():
            raise ModelError(f"model folder {folder}: missing {config_name} (the preprocessing config)")
        return ModelFiles(
            model_dir=folder,
            graph=graph if graph is not None else onnx,
            params=params,
            config=config,
            onnx=onnx if onnx.is_file() else None,
            openvino_xml=_find_openvino(folder),
        )
    return None


def _find_openvino(folder: Path) -> Path | None:
    ov_dir = folder / "openvino"
    if not ov_dir.is_dir():
        return None
    xmls = sorted(p for p in ov_dir.glob("*.xml") if p.with_suffix(".bin").is_file())
    return xmls[0] if len(xmls) == 1 else None


def find_model_files(model_dir: str | Path) -> ModelFiles:
    """Locate graph, weights and yml in ``model_dir`` (or its single sub-folder)."""
    folder = Path(model_dir).expanduser()
    if not folder.exists():
        raise ModelError(f"model folder {folder}: does not exist")
    if not folder.is_dir():
        raise ModelError(f"model folder {folder}: is not a directory")
    found = _find_in(folder)
    if found is None:
        subfolders = [p for p in folder.iterdir() if p.is_dir() and p.name != "openvino"]
        candidates = [f for f in (_find_in(p) for p in subfolders) if f is not None]
        if len(candidates) == 1:
            found = candidates[0]
    if found is None:
        raise ModelError(
            f"model folder {folder}: no inference.json/inference.pdmodel (+ .pdiparams, inference.yml) "
            "or model.pdmodel (+ infer_cfg.yml) found"
        )
    return found


def read_model_config(files: ModelFiles) -> dict:
    """Parse the model's ``inference.yml``/``infer_cfg.yml`` into a dict."""
    try:
        with open(files.config, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ModelError(f"model config {files.config}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ModelError(f"model config {files.config}: cannot be read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise ModelError(f"model config {files.config}: expected a mapping at the top level")
    if not isinstance(data.get("Preprocess", []), list):
        raise ModelError(f"model config {files.config}: 'Preprocess' must be a list of ops")
    return data
