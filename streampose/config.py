"""Pipeline configuration: PaddleX's YAML schema, with a few streampose additions.

Resolution order is PaddleX's: an explicit ``config`` dict, else a YAML path, else the packaged
YAML of a registered pipeline name.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from streampose.errors import ConfigError

PIPELINE_NAME = "human_keypoint_detection"
STREAM_PRESET = "human_keypoint_detection_stream"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
KNOWN_PIPELINES = {
    PIPELINE_NAME: "human_keypoint_detection.yaml",
    # Same models and numbers, tuned for video: the detector's raw export (same weights, its
    # OpenVINO IR runs 2.3x faster than the NMS graph's ONNX route) and `auto` pose precision
    # (bf16 where it is measured faster on the CPU: same OKS AP). The default of `streampose run`.
    STREAM_PRESET: "human_keypoint_detection_stream.yaml",
}
# auto: bf16 where it is measured faster on this CPU (runtime/precision_probe), else f32;
# int8: the copy `streampose models quantize` made
PRECISIONS = ("auto", "f32", "bf16", "int8")
# PaddleX engines mapped to streampose backends.
ENGINE_TO_BACKEND = {
    "paddle": "paddle", "paddle_static": "paddle", "paddle_dynamic": "paddle",
    "onnxruntime": "onnxruntime", "openvino": "openvino", "hpi": "auto", "flexible": "auto",
}


def packaged_config_path(name: str) -> Path:
    if name not in KNOWN_PIPELINES:
        raise ConfigError(f"pipeline {name!r}: unknown (streampose provides {', '.join(KNOWN_PIPELINES)}; "
                          "or pass a .yaml path)")
    return CONFIG_DIR / KNOWN_PIPELINES[name]


def load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"pipeline config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"pipeline config {path}: expected a mapping at the top level")
    return data


def load_pipeline_config(pipeline: str | None, config: dict | None) -> dict:
    if config is not None:
        if not isinstance(config, dict):
            raise ConfigError("config: must be a dict in PaddleX's pipeline schema")
        data = copy.deepcopy(config)
    elif pipeline is None:
        raise ConfigError("create_pipeline: give a pipeline name, a .yaml path or a config dict")
    elif str(pipeline).lower().endswith((".yaml", ".yml")):
        data = load_yaml(Path(pipeline).expanduser())
    else:
        data = load_yaml(packaged_config_path(str(pipeline)))
    name = data.get("pipeline_name")
    if name != PIPELINE_NAME:
        raise ConfigError(f"pipeline config: pipeline_name is {name!r}; streampose runs {PIPELINE_NAME!r}")
    return data


@dataclass(frozen=True)
class SubModuleSettings:
    model_name: str | None
    model_dir: str | None
    batch_size: int
    precision: str | None = None  # streampose: OpenVINO precision for this model (None: global)
    cpu_threads: int = 0  # streampose: threads per stream (0: the backend's choice)
    streams: int = 1  # streampose: runs of this model that may execute at once (pose workers)


@dataclass(frozen=True)
class PipelineSettings:
    """The parsed, validated config: plain values, picklable, one place to read them."""

    detector: SubModuleSettings
    keypoints: SubModuleSettings
    det_threshold: float | None
    flip: bool
    use_udp: bool | None
    backend: str
    visualize: bool

    @classmethod
    def from_config(cls, data: dict) -> PipelineSettings:
        modules = data.get("SubModules")
        if not isinstance(modules, dict):
            raise ConfigError("pipeline config: missing the 'SubModules' mapping")
        det = modules.get("ObjectDetection")
        kpt = modules.get("KeypointDetection")
        if not isinstance(det, dict) or not isinstance(kpt, dict):
            raise ConfigError("pipeline config: SubModules needs ObjectDetection and KeypointDetection")
        threshold = det.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise ConfigError(f"pipeline config: ObjectDetection.threshold must be a number, got {threshold!r}")
        backend = str(data.get("backend") or ENGINE_TO_BACKEND.get(str(data.get("engine") or "").lower(), "auto"))
        serving = data.get("Serving") or {}
        return cls(
            detector=_submodule(det, "ObjectDetection"),
            keypoints=_submodule(kpt, "KeypointDetection"),
            det_threshold=None if threshold is None else float(threshold),
            flip=bool(kpt.get("flip", False)),
            use_udp=None if kpt.get("use_udp") is None else bool(kpt.get("use_udp")),
            backend=backend,
            visualize=bool(serving.get("visualize", True)),
        )


def _submodule(section: dict, label: str) -> SubModuleSettings:
    name, folder = section.get("model_name"), section.get("model_dir")
    if not name and not folder:
        raise ConfigError(f"pipeline config: {label} needs model_name or model_dir")
    try:
        batch_size = int(section.get("batch_size") or 1)
    except (TypeError, ValueError):
        raise ConfigError(f"pipeline config: {label}.batch_size must be an integer") from None
    if batch_size < 1:
        raise ConfigError(f"pipeline config: {label}.batch_size must be at least 1")
    precision = section.get("precision")
    if precision is not None and str(precision).lower() not in PRECISIONS:
        raise ConfigError(f"pipeline config: {label}.precision must be one of {', '.join(PRECISIONS)}")
    return SubModuleSettings(str(name) if name else None, str(folder) if folder else None, batch_size,
                             None if precision is None else str(precision).lower(),
                             cpu_threads=_count(section, label, "cpu_threads", 0, minimum=0),
                             streams=_count(section, label, "streams", 1, minimum=1))


def _count(section: dict, label: str, key: str, default: int, *, minimum: int) -> int:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"pipeline config: {label}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def export_pipeline_config(name: str, save_path: str | Path) -> Path:
    """``--get_pipeline_config``: copy the packaged YAML to a file or into a directory."""
    source = packaged_config_path(name)
    target = Path(save_path).expanduser()
    if target.suffix.lower() not in (".yaml", ".yml"):
        target = target / f"{name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
