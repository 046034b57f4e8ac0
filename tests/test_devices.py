"""--device parsing and the GPU paths on a machine without one: clear one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streampose.errors import DeviceError
from streampose.models.folder import find_model_files
from streampose.runtime import RuntimeOptions, parse_device, resolve_backend


@pytest.mark.parametrize(("text", "expected"), [
    (None, "cpu"), ("", "cpu"), ("cpu", "cpu"), ("CPU", "cpu"), ("gpu", "gpu:0"), ("gpu:1", "gpu:1"),
    ("cuda:2", "gpu:2"),
])
def test_device_strings_parse_like_paddlex(text, expected):
    assert str(parse_device(text)) == expected


@pytest.mark.parametrize("text", ["npu:0", "gpu:x", "gpu:-1", "gpu:0,1"])
def test_bad_device_strings_are_one_line_errors(text):
    with pytest.raises(DeviceError) as caught:
        parse_device(text)
    assert "\n" not in str(caught.value) and repr(text) in str(caught.value)


def test_auto_backend_prefers_openvino_on_cpu_and_never_on_gpu():
    assert resolve_backend("auto", "cpu") == "openvino"
    assert resolve_backend("auto", "gpu:0") in ("onnxruntime", "paddle")


def _has_cuda_paddle() -> bool:
    import paddle  # noqa: PLC0415

    return bool(paddle.is_compiled_with_cuda()) and paddle.device.cuda.device_count() > 0


def test_paddle_on_gpu_without_cuda_build_says_how_to_install(model_home):
    if _has_cuda_paddle():
        pytest.skip("this machine has a CUDA build of paddlepaddle and a GPU")
    from streampose.runtime.paddle_backend import PaddleSession  # noqa: PLC0415

    with pytest.raises(DeviceError) as caught:
        PaddleSession(find_model_files(model_home / "PP-TinyPose_128x96"), RuntimeOptions(device="gpu:0"))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("device gpu:0:") and "paddlepaddle-gpu 3.x" in message


def test_openvino_on_gpu_points_to_onnxruntime(model_home):
    from streampose.runtime.openvino_backend import OpenVinoSession  # noqa: PLC0415

    with pytest.raises(DeviceError) as caught:
        OpenVinoSession(find_model_files(model_home / "PP-TinyPose_128x96"),
                        RuntimeOptions(backend="openvino", device="gpu:0"))
    assert "--backend onnxruntime" in str(caught.value)


def test_cli_gpu_without_gpu_fails_with_one_line(tmp_path, samples_dir):
    if _has_cuda_paddle():
        pytest.skip("this machine has a CUDA build of paddlepaddle and a GPU")
    completed = subprocess.run(
        [sys.executable, "-m", "streampose.cli", "predict", "--input", str(samples_dir / "messi5.jpg"),
         "--device", "gpu:0", "--backend", "paddle", "--save_path", str(tmp_path / "out")],
        capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert completed.returncode != 0
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("streampose: error: device gpu:0:") and "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()
