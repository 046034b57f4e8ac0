"""ONNX Runtime backend: CPU everywhere, CUDA (and TensorRT) with the onnxruntime-gpu wheel.

This is also the GPU route from PyPI alone: PyPI's paddlepaddle-gpu stops at 2.6, which cannot load
Paddle 3 models, while ``onnxruntime-gpu`` runs the paddle2onnx export of the same folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from streampose.errors import DeviceError, ModelError
from streampose.runtime.onnx_export import MAX_BATCH_METADATA_KEY, cache_home, onnx_path_for
from streampose.runtime.split_nms import NmsSettings, split_nms
from streampose.runtime.base import ModelFiles, RuntimeOptions
from streampose.runtime.devices import Device, parse_device

_FETCH_NAME = re.compile(r"^fetch_name_(\d+)$")
_ORT_ERRORS_ONLY = 3
_GPU_INSTALL_HINT = 'pip install "streampose[gpu]" (onnxruntime-gpu, instead of onnxruntime)'
_NUMPY_DTYPE_OF_ONNX = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _import_onnxruntime():
    try:
        import onnxruntime  # noqa: PLC0415 - optional backend
    except ImportError as exc:
        raise DeviceError(f"backend onnxruntime: onnxruntime is not installed ({exc})") from None
    return onnxruntime


def paddle_output_order(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` in Paddle's fetch order (``fetch_name_0``, ``fetch_name_1``, ...).

    Exports that lost the fetch names keep their declared order.
    """
    numbers = [_FETCH_NAME.match(name) for name in names]
    if all(numbers) and len({int(m.group(1)) for m in numbers}) == len(names):
        return sorted(range(len(names)), key=lambda i: int(numbers[i].group(1)))
    return list(range(len(names)))


def run_in_single_batches(
    run_one: Callable[[dict[str, np.ndarray]], list[np.ndarray]], feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """Run a batch-1-only graph item by item and join each output along axis 0.

    That join is exactly Paddle's batched layout for both graph styles we meet: per-image outputs
    ``[B, ...]`` and NMS outputs (rows ``[M, 6]`` image after image, counts ``[B]``).
    """
    batch = {int(np.shape(array)[0]) for array in feeds.values() if np.ndim(array) > 0}
    if len(batch) != 1:
        raise ValueError(f"model inputs disagree on the batch size: {sorted(batch)}")
    size = batch.pop()
    if size == 1:
        return run_one(feeds)
    per_item = [run_one({name: array[i : i + 1] for name, array in feeds.items()}) for i in range(size)]
    return [np.concatenate(outputs, axis=0) for outputs in zip(*per_item)]


class OnnxRuntimeSession:
    """One ONNX Runtime session on the model's ONNX export (exported to the cache on first use).

    ``InferenceSession.run`` is thread-safe in ONNX Runtime, so no lock is needed; separate
    sessions share nothing.
    """

    backend_name = "onnxruntime"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        ort = _import_onnxruntime()
        device = parse_device(options.device)
        providers = _providers_for(device, ort, options)  # fail on a missing GPU before exporting
        model_path = onnx_path_for(files)
        # Detectors with NMS in the graph: run the graph up to the NMS (any batch) and let the
        # detector do the NMS (streampose.runtime.split_nms explains why).
        self.pre_nms: NmsSettings | None = None
        split = split_nms(model_path) if options.extra.get("split_nms", True) else None
        if split is not None:
            model_path, self.pre_nms = split
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.log_severity_level = _ORT_ERRORS_ONLY
        if options.cpu_threads > 0:
            session_options.intra_op_num_threads = int(options.cpu_threads)
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=session_options, providers=providers
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException types
            kind = DeviceError if device.kind == "gpu" else ModelError
            raise kind(f"model {model_path}: ONNX Runtime could not load it ({_first_line(exc)})") from exc
        declared_inputs = self._session.get_inputs()
        self.input_names = [value.name for value in declared_inputs]
        self._input_dtypes = {value.name: _NUMPY_DTYPE_OF_ONNX.get(value.type) for value in declared_inputs}
        declared_outputs = [value.name for value in self._session.get_outputs()]
        self.output_names = [declared_outputs[i] for i in paddle_output_order(declared_outputs)]
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.max_batch = int(metadata[MAX_BATCH_METADATA_KEY]) if MAX_BATCH_METADATA_KEY in metadata else None
        if self.pre_nms is not None:
            self.max_batch = None
        self.providers = list(self._session.get_providers())

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        prepared = {}
        for name in self.input_names:
            if name not in feeds:
                raise ValueError(f"missing model input {name!r}")
            prepared[name] = np.ascontiguousarray(feeds[name], dtype=self._input_dtypes[name])
        if self.max_batch == 1:
            return run_in_single_batches(self._run_once, prepared)
        return self._run_once(prepared)

    def _run_once(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self.output_names, feeds)


def _providers_for(device: Device, ort, options: RuntimeOptions) -> list:
    """CPU only on ``cpu``; on ``gpu:N`` TensorRT (when built in) then CUDA, with CPU for leftovers."""
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DeviceError(
            f"device {device}: this onnxruntime has no CUDA support; {_GPU_INSTALL_HINT}"
        )
    gpu = {"device_id": device.index}
    providers: list = []
    if "TensorrtExecutionProvider" in available and options.extra.get("tensorrt", True):
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    **gpu,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_home() / "tensorrt"),
                },
            )
        )
    providers += [("CUDAExecutionProvider", gpu), "CPUExecutionProvider"]
    return providers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
