"""``create_pipeline`` and the human keypoint pipeline, with PaddleX's API shape.

``predict`` handles images (arrays, files, folders, URLs, lists) like PaddleX, but poses every
person of a batch of images in one keypoint call. ``stream`` (video) lives in the graph package and
yields the same result objects.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streampose.config import PipelineSettings, SubModuleSettings, load_pipeline_config
from streampose.errors import ConfigError
from streampose.inputs import ImageItem, collect_inputs, iter_batches
from streampose.models.detector import Detector
from streampose.models.keypoints import KeypointModel
from streampose.models.registry import load_model_files
from streampose.results import KptResult
from streampose.runtime import RuntimeOptions, parse_device, resolve_backend

# Accepted for PaddleX compatibility; they configure Paddle-only machinery streampose replaces.
_PADDLEX_ONLY_KWARGS = ("pp_option", "use_hpip", "hpi_config", "engine_config")


def input_cache_dir() -> Path:
    value = os.environ.get("STREAMPOSE_CACHE_HOME")
    base = Path(value).expanduser() if value else Path.home() / ".cache" / "streampose"
    return base


def check_threshold(value: Any, name: str = "det_threshold") -> float | None:
    """PaddleX skips filtering for int thresholds (a quirk); streampose treats 0 and 1 as numbers."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number between 0 and 1, got {value!r}") from None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: must be between 0 and 1, got {value}")
    return value


class KeypointPipeline:
    """Pedestrian detector + PP-TinyPose, top-down."""

    def __init__(self, settings: PipelineSettings, device: str | None = None, *,
                 backend: str | None = None, cpu_threads: int = 0, enable_mkldnn: bool = True,
                 precision: str | None = None) -> None:
        self.settings = settings
        self.device = str(parse_device(device))
        self.backend = resolve_backend(backend or settings.backend, self.device)
        self.runtime_options = RuntimeOptions(backend=self.backend, device=self.device,
                                              cpu_threads=cpu_threads, enable_mkldnn=enable_mkldnn,
                                              precision=precision or "f32")
        det_files = load_model_files(settings.detector.model_name, settings.detector.model_dir)
        kpt_files = load_model_files(settings.keypoints.model_name, settings.keypoints.model_dir)
        self.detector = Detector(det_files, self._options_for(settings.detector, precision))
        self.keypoint_model = KeypointModel(kpt_files, self._options_for(settings.keypoints, precision),
                                            flip=settings.flip, use_udp=settings.use_udp)
        self.det_threshold = settings.det_threshold

    def _options_for(self, module: SubModuleSettings, explicit: str | None) -> RuntimeOptions:
        """An explicit precision or thread count wins; else the sub-module's config; else f32 and
        the backend's threads. Only OpenVINO has a precision switch; other backends always run
        their model's own (f32) precision."""
        chosen = explicit or module.precision or "f32"
        if self.backend != "openvino":
            chosen = "f32"
        threads = self.runtime_options.cpu_threads or module.cpu_threads
        return dataclasses.replace(self.runtime_options, precision=chosen, cpu_threads=threads,
                                   streams=module.streams)

    def predict(self, input: Any, det_threshold: float | None = None, **kwargs: Any) -> Iterator[KptResult]:  # noqa: A002
        """Yield one :class:`KptResult` per input image, in input order (a generator, as in PaddleX)."""
        if det_threshold is None and "threshold" in kwargs:  # the PaddleX docs' name for it
            det_threshold = kwargs.pop("threshold")
        threshold = check_threshold(det_threshold)
        if threshold is None:
            threshold = self.det_threshold
        items = collect_inputs(input, input_cache_dir())
        for batch in iter_batches(items, self.settings.detector.batch_size):
            yield from self.predict_images(batch, threshold)

    __call__ = predict

    def predict_images(self, batch: list[ImageItem], threshold: float | None) -> list[KptResult]:
        """Detect on the whole batch in one call, then pose all its persons in one call."""
        images = [item.load() for item in batch]
        detections = self.detector.predict(images, threshold)
        poses = self.keypoint_model.predict_many(images, [found.boxes for found in detections])
        results = []
        for item, image, found, pose in zip(batch, images, detections, poses):
            boxes = [
                {
                    "coordinate": [float(value) for value in found.boxes[index]],
                    "det_score": float(found.scores[index]),
                    "keypoints": pose.keypoints[index],
                    "kpt_score": pose.scores[index],
                }
                for index in range(len(found))
            ]
            results.append(KptResult({"input_path": item.input_path, "input_img": image, "boxes": boxes}))
        return results

    def stream(self, source: Any, **options: Any):
        """Per-frame results of a video, webcam or RTSP source (see :mod:`streampose.graph`)."""
        from streampose.graph.api import stream_results  # noqa: PLC0415

        return stream_results(self, source, **options)


def create_pipeline(pipeline: str | None = None, config: dict | None = None, device: str | None = None,
                    *, backend: str | None = None, engine: str | None = None, cpu_threads: int = 0,
                    enable_mkldnn: bool = True, precision: str | None = None, **kwargs: Any) -> KeypointPipeline:
    """Build the pipeline from a name (``human_keypoint_detection``), a YAML path or a config dict."""
    for name in _PADDLEX_ONLY_KWARGS:
        if kwargs.pop(name, None) not in (None, False):
            warnings.warn(f"create_pipeline: {name} is a PaddleX option with no effect in streampose",
                          stacklevel=2)
    if kwargs:
        raise TypeError(f"create_pipeline got unexpected arguments: {', '.join(sorted(kwargs))}")
    data = load_pipeline_config(pipeline, config)
    if engine is not None:
        data["engine"] = engine
        data.pop("backend", None)
    settings = PipelineSettings.from_config(data)
    return KeypointPipeline(settings, device, backend=backend, cpu_threads=cpu_threads,
                            enable_mkldnn=enable_mkldnn, precision=precision)
