"""Inference backends behind one small interface (:class:`InferenceSession`)."""

from __future__ import annotations

import importlib.util

from streampose.errors import DeviceError
from streampose.runtime.base import InferenceSession, ModelFiles, RuntimeOptions
from streampose.runtime.devices import Device, parse_device

BACKENDS = ("paddle", "onnxruntime", "openvino")

# Fastest first, as measured on the reference 2-core CPU (models/README, benchmarks/).
_AUTO_ORDER_CPU = ("openvino", "onnxruntime", "paddle")
_AUTO_ORDER_GPU = ("onnxruntime", "paddle")
_MODULE_OF = {"paddle": "paddle", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def available_backends() -> list[str]:
    """Backends whose Python package is importable here."""
    return [name for name in BACKENDS if importlib.util.find_spec(_MODULE_OF[name]) is not None]


def resolve_backend(name: str, device: str | None) -> str:
    """Turn ``auto`` into the fastest installed backend for the device."""
    name = (name or "auto").lower()
    if name != "auto":
        if name not in BACKENDS:
            raise DeviceError(f"backend {name!r}: unknown (choose auto, {', '.join(BACKENDS)})")
        return name
    order = _AUTO_ORDER_GPU if parse_device(device).kind == "gpu" else _AUTO_ORDER_CPU
    installed = available_backends()
    for candidate in order:
        if candidate in installed:
            return candidate
    raise DeviceError("backend auto: no inference backend is installed (pip install paddlepaddle)")


def create_session(files: ModelFiles, options: RuntimeOptions) -> InferenceSession:
    """Load one model folder with the backend named in ``options`` (``auto`` resolved here)."""
    backend = resolve_backend(options.backend, options.device)
    if backend == "paddle":
        from streampose.runtime.paddle_backend import PaddleSession  # noqa: PLC0415

        return PaddleSession(files, options)
    if backend == "onnxruntime":
        from streampose.runtime.onnxruntime_backend import OnnxRuntimeSession  # noqa: PLC0415

        return OnnxRuntimeSession(files, options)
    from streampose.runtime.openvino_backend import OpenVinoSession  # noqa: PLC0415

    return OpenVinoSession(files, options)


__all__ = [
    "BACKENDS",
    "Device",
    "InferenceSession",
    "ModelFiles",
    "RuntimeOptions",
    "available_backends",
    "create_session",
    "parse_device",
    "resolve_backend",
]
