"""The one interface every inference backend implements.

Models (detector, keypoints) only ever see :class:`InferenceSession`: named float inputs in, a
list of output arrays out, in the order the model declares them. That keeps Paddle Inference,
ONNX Runtime and OpenVINO interchangeable behind ``--backend``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RuntimeOptions:
    """Plain, picklable settings shared by all backends."""

    backend: str = "auto"
    device: str = "cpu"
    cpu_threads: int = 0  # per stream; 0: let the backend choose (all cores)
    # Runs that may execute at once from different threads. OpenVINO gives each its own stream
    # (a compiled model with one stream runs concurrent requests one after the other).
    streams: int = 1
    enable_mkldnn: bool = True  # Paddle only: oneDNN kernels on CPU
    precision: str = "f32"  # f32 | bf16 | int8 (where the backend supports it)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFiles:
    """Where one exported model's files are."""

    model_dir: Path
    graph: Path  # inference.json / inference.pdmodel / model.json / model.pdmodel
    params: Path
    config: Path  # inference.yml or infer_cfg.yml
    onnx: Path | None = None
    openvino_xml: Path | None = None


class InferenceSession(Protocol):
    """A loaded model ready to run."""

    backend_name: str
    input_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; ``feeds`` maps input name to array. Returns outputs in model order."""
        ...
