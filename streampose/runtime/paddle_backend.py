"""Paddle Inference backend (CPU with oneDNN, or CUDA with paddlepaddle-gpu 3.x)."""

from __future__ import annotations

import os
import threading

import numpy as np

from streampose.errors import DeviceError, ModelError
from streampose.runtime._quiet import native_stdout_silenced
from streampose.runtime.base import ModelFiles, RuntimeOptions
from streampose.runtime.devices import parse_device


def _import_paddle_inference():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("FLAGS_print_ir", "0")
    try:
        import paddle.inference as paddle_infer  # noqa: PLC0415 - heavy, optional import
    except ImportError as exc:
        raise DeviceError(f"backend paddle: paddlepaddle is not installed ({exc})") from None
    return paddle_infer


class PaddleSession:
    """One Paddle predictor. Runs are serialised: a predictor is not re-entrant."""

    backend_name = "paddle"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        paddle_infer = _import_paddle_inference()
        device = parse_device(options.device)
        if files.graph.suffix not in (".json", ".pdmodel"):
            raise ModelError(f"model {files.model_dir}: no Paddle graph (inference.json/.pdmodel)")
        config = paddle_infer.Config(str(files.graph), str(files.params))
        if device.kind == "gpu":
            import paddle  # noqa: PLC0415

            if not paddle.is_compiled_with_cuda():
                raise DeviceError(
                    f"device {device}: this paddlepaddle build has no CUDA support "
                    "(install paddlepaddle-gpu 3.x from Paddle's own index, see README)"
                )
            if paddle.device.cuda.device_count() <= device.index:
                raise DeviceError(f"device {device}: no such GPU on this machine")
            config.enable_use_gpu(256, device.index)
        else:
            config.disable_gpu()
            if options.enable_mkldnn:
                config.enable_mkldnn()
            else:
                config.disable_mkldnn()
            threads = options.cpu_threads or (os.cpu_count() or 1)
            config.set_cpu_math_library_num_threads(int(threads))
        config.switch_ir_optim(True)
        config.disable_glog_info()
        try:
            with native_stdout_silenced():
                self._predictor = paddle_infer.create_predictor(config)
        except Exception as exc:  # Paddle raises bare RuntimeError/ValueError subclasses
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {files.model_dir}: Paddle could not load it ({first})") from exc
        self.input_names = list(self._predictor.get_input_names())
        self.output_names = list(self._predictor.get_output_names())
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            for name in self.input_names:
                if name not in feeds:
                    raise ValueError(f"missing model input {name!r}")
                self._predictor.get_input_handle(name).copy_from_cpu(
                    np.ascontiguousarray(feeds[name])
                )
            with native_stdout_silenced():
                self._predictor.run()
            return [
                self._predictor.get_output_handle(name).copy_to_cpu() for name in self.output_names
            ]
