"""INT8 post-training quantization (NNCF) of the models the OpenVINO backend runs.

INT8 is a precision a user opts into (``--precision int8`` or a sub-module's ``precision: int8``),
never a silent default: it changes the numbers, so its OKS AP and speed are measured against f32
and bf16 (README, "Precision"). Quantizing needs calibration inputs that look like what the model
sees in use, so they are made the way the pipeline makes them: detector inputs by
``Detector.preprocess`` of real frames, TinyPose inputs by ``KeypointModel.make_crops`` of the
persons the real (f32) detector finds in those frames. The sample video and photos serve; COCO
evaluation images are deliberately not used, so the AP figures stay honest.

Where the result goes mirrors the ONNX export cache (:mod:`streampose.runtime.onnx_export`):
``${STREAMPOSE_CACHE_HOME:-~/.cache/streampose}/int8/<folder>-<fingerprint>/model.xml`` (+ ``.bin``),
keyed by the content of the float model it was made from, so replaced weights never meet a stale
INT8 copy, and model folders (often read-only) are never written to.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np

from streampose.errors import InputError, ModelError
from streampose.runtime.int8_cache import (  # noqa: F401 - re-exported for callers and tests
    INT8,
    INT8_FILE_NAME,
    RECIPE_VERSION,
    cached_int8_path,
    find_int8_model,
    int8_fingerprint,
)
from streampose.runtime.base import ModelFiles

# 300 samples is NNCF's default subset; more moves TinyPose's AP by < 0.005 and costs time.
DEFAULT_SAMPLES = 300
DEFAULT_VIDEO_FRAMES = 120
CALIBRATION_THRESHOLD = 0.5
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# One calibration sample: the model's only (image) input, or every input by name.
CalibrationSample = Union[np.ndarray, dict[str, np.ndarray]]


def quantize_model(files: ModelFiles, calibration: Sequence[CalibrationSample], output: Path | None = None) -> Path:
    """Quantize the model the OpenVINO backend would run to INT8 and save it as an IR.

    ``calibration`` holds model inputs (NCHW float32, any batch; or dicts by input name).
    Without ``output`` the IR goes to the cache where ``precision="int8"`` finds it;
    ``output`` may be an ``.xml`` path or a folder. Files appear atomically.
    """
    import openvino as ov  # noqa: PLC0415 - heavy, and only needed here

    from streampose.runtime.openvino_backend import float_model_source  # noqa: PLC0415 - import cycle

    if not calibration:
        raise InputError(f"model {files.model_dir.name}: no calibration samples to quantize with")
    float_source, _ = float_model_source(files)
    try:
        model = ov.Core().read_model(str(float_source))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long texts
        raise ModelError(f"model {float_source}: OpenVINO could not read it ({_first_line(exc)})") from None
    from streampose.runtime.openvino_backend import make_batch_dynamic  # noqa: PLC0415 - cycle

    make_batch_dynamic(model, ov)
    quantized = _quantize_with_nncf(model, calibration, files)
    if output is None:
        target = cached_int8_path(files, float_source)
    else:
        target = Path(output).expanduser()
        if target.suffix != ".xml":
            target = target / INT8_FILE_NAME
    _save_atomically(quantized, target, ov)
    return target


def _quantize_with_nncf(model, calibration: Sequence[CalibrationSample], files: ModelFiles):
    try:
        import nncf  # noqa: PLC0415 - optional at run time; only quantizing needs it
    except ImportError as exc:
        raise ModelError(f"quantize: NNCF is not installed ({exc}); pip install 'streampose[quantize]'") from None
    input_names = [port.get_any_name() for port in model.inputs]
    samples = [_feed_for(sample, input_names, files) for sample in calibration]
    nncf.set_log_level(40)  # errors only: the CLI prints its own progress lines
    try:
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            # Asymmetric activations (MIXED) fit the post-ReLU/post-add ranges better than
            # PERFORMANCE's symmetric ones: TinyPose OKS AP 0.556 vs 0.488 on coco_mini.
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(samples),
            fast_bias_correction=True,  # the full bias correction took 6x longer and scored lower
            ignored_scope=nncf.IgnoredScope(names=sensitive_convolutions(model), validate=False),
        )
    except Exception as exc:  # noqa: BLE001 - NNCF failures become one line for the user
        raise ModelError(f"model {files.model_dir.name}: NNCF quantization failed ({_first_line(exc)})") from exc


def sensitive_convolutions(model) -> list[str]:
    """Convolutions kept in float: the ones that read the image, and the output heads with the
    convolutions feeding them.

    Those layers decide the output values directly (heatmap peaks and their sub-pixel shape,
    detector scores and box offsets), and they are a small share of the compute. Measured on
    TinyPose 128x96: quantizing everything costs 0.11 OKS AP on coco_mini, keeping these costs 0.02.
    """
    def is_convolution(node) -> bool:
        return node.get_type_name() in ("Convolution", "GroupConvolution")

    def nearest_convolutions(node, forward: bool) -> set[str]:
        """Names of the first convolutions met walking from ``node`` (not counting it)."""
        found: set[str] = set()
        stack, seen = [node], set()
        while stack:
            current = stack.pop()
            if forward:
                neighbours = [t.get_node() for out in current.outputs() for t in out.get_target_inputs()]
            else:
                neighbours = [port.get_source_output().get_node() for port in current.inputs()]
            for neighbour in neighbours:
                name = neighbour.get_friendly_name()
                if name in seen:
                    continue
                seen.add(name)
                if is_convolution(neighbour):
                    found.add(name)
                else:
                    stack.append(neighbour)
        return found

    convolutions = [node for node in model.get_ordered_ops() if is_convolution(node)]
    heads = [node for node in convolutions if not nearest_convolutions(node, forward=True)]
    keep: set[str] = {node.get_friendly_name() for node in heads}
    for head in heads:
        keep |= nearest_convolutions(head, forward=False)
    for parameter in model.get_parameters():
        keep |= nearest_convolutions(parameter, forward=True)
    return sorted(keep)


def _feed_for(sample: CalibrationSample, input_names: list[str], files: ModelFiles):
    """One NNCF dataset item: a bare array for single-input models, else a dict by input name."""
    if isinstance(sample, dict):
        missing = [name for name in input_names if name not in sample]
        if missing:
            raise InputError(f"model {files.model_dir.name}: calibration sample lacks input {missing[0]!r}")
        return {name: np.ascontiguousarray(sample[name], np.float32) for name in input_names}
    if len(input_names) != 1:
        raise InputError(f"model {files.model_dir.name}: takes inputs {input_names}; give calibration dicts")
    return np.ascontiguousarray(sample, np.float32)


def _save_atomically(model, target: Path, ov) -> None:
    """Write xml+bin into a fresh folder, then swap it in: readers never see a mixed pair."""
    try:
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.parent.name}.", suffix=".partial", dir=target.parent.parent))
    except OSError as exc:
        raise ModelError(f"INT8 model {target}: cannot create its folder ({exc.strerror})") from None
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would make a shared cache unreadable to others
        ov.save_model(model, str(staging / target.name))
        if not target.parent.exists():
            os.replace(staging, target.parent)
            return
        # Replacing an existing copy: move each file over the old one, weights first, so a
        # reader that opens the xml afterwards always finds the weights it describes.
        for suffix in (".bin", ".xml"):
            os.replace(staging / target.with_suffix(suffix).name, target.with_suffix(suffix))
    except OSError as exc:
        raise ModelError(f"INT8 model {target}: cannot be written ({exc.strerror})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- calibration data from real media -------------------------------------------------------


def video_frames(video: Path, count: int = DEFAULT_VIDEO_FRAMES) -> list[np.ndarray]:
    """``count`` BGR frames spread evenly over the whole video (varied scenes, not one second)."""
    import av  # noqa: PLC0415

    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            total = int(stream.frames or 0)
            step = max(1, total // count) if total else 1
            frames = []
            for index, frame in enumerate(container.decode(stream)):
                if index % step == 0:
                    frames.append(frame.to_ndarray(format="bgr24"))
                    if len(frames) == count:
                        break
    except (OSError, av.error.FFmpegError) as exc:
        raise InputError(f"calibration video {video}: cannot be decoded ({_first_line(exc)})") from None
    if not frames:
        raise InputError(f"calibration video {video}: has no frames")
    return frames


def folder_images(folder: Path) -> list[np.ndarray]:
    """Every image file directly in ``folder`` (BGR)."""
    from streampose.inputs import read_image  # noqa: PLC0415

    if not folder.is_dir():
        raise InputError(f"calibration images {folder}: not a folder")
    return [read_image(path) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]


def detector_samples(detector, images: Iterable[np.ndarray]) -> list[CalibrationSample]:
    """Detector inputs exactly as ``Detector`` feeds them, one image per sample."""
    samples: list[CalibrationSample] = []
    for image in images:
        tensor, record = detector.preprocess(image)
        feeds = {"image": np.ascontiguousarray(tensor.transpose(2, 0, 1)[None], np.float32)}
        if "scale_factor" in detector.input_names:
            feeds["scale_factor"] = np.array([[record.scale_xy[1], record.scale_xy[0]]], np.float32)
        if "im_shape" in detector.input_names:
            feeds["im_shape"] = np.array([record.resized_hw], np.float32)
        samples.append(feeds if len(detector.input_names) > 1 else feeds["image"])
    return samples


def pose_samples(detector, keypoint_model, images: Iterable[np.ndarray], limit: int = DEFAULT_SAMPLES,
                 threshold: float = CALIBRATION_THRESHOLD) -> list[np.ndarray]:
    """Person crops (batch 1 each) of the persons ``detector`` finds, as ``KeypointModel`` cuts them.

    Persons are taken round-robin over the images, so a crowded frame cannot fill the set alone.
    """
    per_image = []
    for image in images:
        found = detector.predict([image], threshold)[0]
        if len(found):
            tensor, _, _ = keypoint_model.make_crops(image, found.boxes)
            per_image.append(list(tensor[:, None]))
    return list(_round_robin(per_image, limit))


def _round_robin(groups: list[list[np.ndarray]], limit: int) -> Iterator[np.ndarray]:
    taken = 0
    for depth in range(max((len(group) for group in groups), default=0)):
        for group in groups:
            if depth < len(group):
                yield group[depth]
                taken += 1
                if taken == limit:
                    return


def quantize_models(models: Sequence[ModelFiles], person_detector: ModelFiles, images: list[np.ndarray],
                    limit: int = DEFAULT_SAMPLES) -> list[Path]:
    """Quantize each of ``models`` (detectors and keypoint models) on ``images``, into the cache.

    Keypoint models calibrate on the persons ``person_detector`` (run in f32) finds in the
    images; detectors on the images themselves.
    """
    from streampose.models.detector import Detector  # noqa: PLC0415
    from streampose.models.keypoints import KeypointModel  # noqa: PLC0415
    from streampose.runtime import RuntimeOptions  # noqa: PLC0415

    f32 = RuntimeOptions(backend="openvino", precision="f32")
    finder: Detector | None = None
    written = []
    for files in models:
        started = time.perf_counter()
        if is_keypoint_model(files):
            finder = finder or Detector(person_detector, f32)
            samples = pose_samples(finder, KeypointModel(files, f32), images, limit)
        else:
            samples = detector_samples(Detector(files, f32), images[:limit])
        path = quantize_model(files, samples)
        print(f"streampose: {files.model_dir.name}: INT8 model written to {path} "
              f"({len(samples)} calibration samples, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
        written.append(path)
    return written


def is_keypoint_model(files: ModelFiles) -> bool:
    """Top-down keypoint models (TinyPose) declare a TopDownEvalAffine preprocessing op."""
    from streampose.models.folder import read_model_config  # noqa: PLC0415

    operations = read_model_config(files).get("Preprocess") or []
    return any(isinstance(op, dict) and op.get("type") == "TopDownEvalAffine" for op in operations)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def calibration_images(video: Path | None, images: Path | None,
                       frames: int = DEFAULT_VIDEO_FRAMES) -> list[np.ndarray]:
    """Frames spread over ``video`` plus every photo in ``images``: the calibration pictures."""
    pictures = video_frames(video, frames) if video is not None else []
    if images is not None:
        pictures.extend(folder_images(images))
    if not pictures:
        raise InputError(f"calibration images {images}: no .jpg/.png images in the folder")
    return pictures


def quantize_named_models(models: Sequence[str] | None, images: list[np.ndarray],
                          limit: int = DEFAULT_SAMPLES) -> list[Path]:
    """``streampose models quantize``: each named model (or folder), default the stream preset's.

    Persons for keypoint calibration are found by the first detector named, else the preset's.
    """
    from streampose.config import STREAM_PRESET, PipelineSettings, load_pipeline_config  # noqa: PLC0415
    from streampose.models.registry import load_model_files  # noqa: PLC0415

    preset = PipelineSettings.from_config(load_pipeline_config(STREAM_PRESET, None))
    if models:
        chosen = [load_model_files(None, Path(name)) if Path(name).is_dir() else load_model_files(name, None)
                  for name in models]
    else:
        chosen = [load_model_files(preset.detector.model_name, preset.detector.model_dir),
                  load_model_files(preset.keypoints.model_name, preset.keypoints.model_dir)]
    detectors = [files for files in chosen if not is_keypoint_model(files)]
    if detectors:
        person_detector = detectors[0]
    else:
        person_detector = load_model_files(preset.detector.model_name, preset.detector.model_dir)
    return quantize_models(chosen, person_detector, images, limit)
