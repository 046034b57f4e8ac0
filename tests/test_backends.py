"""ONNX Runtime and OpenVINO must give Paddle's answers, in Paddle's names and order.

Everything runs the real shared models on real pictures (basketball1/2, messi5, vtest frames),
preprocessed here the plain way (resize, RGB, /255, ImageNet mean/std, CHW), with Paddle Inference
as the reference.
"""

from __future__ import annotations

import locale
import shutil
import stat
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streampose.errors import ConfigError, DeviceError, ModelError
from streampose.runtime.onnx_export import (
    ONNX_FILE_NAME,
    cache_home,
    cached_onnx_path,
    export_onnx,
    model_fingerprint,
    onnx_path_for,
)
from streampose.models.folder import find_model_files
from streampose.runtime.base import ModelFiles, RuntimeOptions
from streampose.runtime.channel_shuffle import PERMUTE_BY_CONVOLUTION_MAX_CHANNELS
from streampose.runtime.onnxruntime_backend import OnnxRuntimeSession
from streampose.runtime.openvino_backend import OpenVinoSession
from streampose.runtime.paddle_backend import PaddleSession

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Person boxes (x1, y1, x2, y2) the PicoDet-320 detector finds in the sample media.
PERSON_BOXES = (
    ("basketball1.png", (32, 78, 164, 480)),
    ("basketball1.png", (426, 16, 640, 480)),
    ("messi5.jpg", (67, 57, 461, 337)),
    ("vtest100", (346, 201, 381, 276)),
    ("vtest100", (493, 150, 519, 220)),
)
SCENES = ("basketball1.png", "messi5.jpg", "vtest100", "basketball2.png", "vtest400")
BACKENDS = {"onnxruntime": OnnxRuntimeSession, "openvino": OpenVinoSession}


def load_picture(samples: Path, name: str) -> np.ndarray:
    """A BGR picture: a sample file, or ``vtestN`` for frame N of vtest.avi."""
    if not name.startswith("vtest"):
        picture = cv2.imread(str(samples / name))
        assert picture is not None, f"sample {name} is missing"
        return picture
    wanted = int(name.removeprefix("vtest"))
    with av.open(str(samples / "vtest.avi")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == wanted:
                return frame.to_ndarray(format="bgr24")
    raise AssertionError(f"vtest.avi has no frame {wanted}")


def to_input(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    rgb = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    normalised = (rgb.astype(np.float32) / 255.0 - MEAN) / STD
    return normalised.transpose(2, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def pictures(samples_dir) -> dict[str, np.ndarray]:
    return {name: load_picture(samples_dir, name) for name in {*SCENES, *(n for n, _ in PERSON_BOXES)}}


@pytest.fixture(scope="module")
def crops(pictures) -> np.ndarray:
    """Five real person crops as a TinyPose 128x96 batch."""
    batch = [to_input(pictures[n][y1:y2, x1:x2], 96, 128) for n, (x1, y1, x2, y2) in PERSON_BOXES]
    return np.stack(batch)


@pytest.fixture(scope="module")
def scenes(pictures) -> np.ndarray:
    """Five real scenes as a PicoDet 320 batch."""
    return np.stack([to_input(pictures[name], 320, 320) for name in SCENES])


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    """One export per model for the whole module, in a cache of its own."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("streampose-cache")
        patch.setenv("STREAMPOSE_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def tinypose(model_home) -> ModelFiles:
    return find_model_files(model_home / "PP-TinyPose_128x96")


@pytest.fixture(scope="module")
def picodet_raw(model_home) -> ModelFiles:
    return find_model_files(model_home / "PicoDet-S_pedestrian_320_raw")


@pytest.fixture(scope="module")
def tinypose_reference(tinypose, crops) -> list[np.ndarray]:
    return PaddleSession(tinypose, RuntimeOptions()).run({"image": crops})


@pytest.fixture(scope="module")
def picodet_reference(picodet_raw, scenes) -> list[np.ndarray]:
    return PaddleSession(picodet_raw, RuntimeOptions()).run({"image": scenes})


@pytest.fixture(scope="module")
def sessions(tinypose, picodet_raw) -> dict[tuple[str, str], object]:
    """One f32 session per (backend, model), shared by the tests below."""
    return {
        (backend, model): cls(files, RuntimeOptions(backend=backend, precision="f32"))
        for backend, cls in BACKENDS.items()
        for model, files in (("tinypose", tinypose), ("picodet", picodet_raw))
    }


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tinypose_matches_paddle_on_real_crops(backend, sessions, crops, tinypose_reference):
    session = sessions[(backend, "tinypose")]
    assert session.backend_name == backend
    assert session.input_names == ["image"]
    heatmaps, argmax = session.run({"image": crops[:3]})
    want_heatmaps, want_argmax = tinypose_reference[0][:3], tinypose_reference[1][:3]
    assert heatmaps.shape == (3, 17, 32, 24) and heatmaps.dtype == np.float32
    assert argmax.shape == (3, 17) and np.issubdtype(argmax.dtype, np.integer)
    assert np.abs(heatmaps - want_heatmaps).max() < 1e-4
    np.testing.assert_array_equal(argmax, want_argmax)
    assert want_heatmaps.max() > 0.5, "crops should hold people: peaky heatmaps make argmax meaningful"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_raw_picodet_matches_paddle_on_real_scenes(backend, sessions, scenes, picodet_reference):
    session = sessions[(backend, "picodet")]
    assert session.input_names == ["image"]
    boxes, scores = session.run({"image": scenes[:3]})
    assert boxes.shape == (3, 2125, 4) and scores.shape == (3, 1, 2125)
    assert np.abs(boxes - picodet_reference[0][:3]).max() < 0.01
    score_error = np.abs(scores - picodet_reference[1][:3])
    # ONNX Runtime's CPU kernels lose relative precision on scores far below any threshold (NMS
    # keeps >= 0.025): measured 1.4e-4 at a Paddle score of 1.4e-4, but <= 2.2e-6 from 0.01 up.
    assert score_error[picodet_reference[1][:3] >= 1e-3].max() < 1e-4
    assert score_error.max() < 5e-4
    assert picodet_reference[1][:3].max(axis=-1).min() > 0.5, "every scene should show a person"


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("model", ["tinypose", "picodet"])
def test_one_session_takes_batch_1_then_5(
    backend, model, sessions, crops, scenes, tinypose_reference, picodet_reference
):
    session = sessions[(backend, model)]
    inputs, reference = (crops, tinypose_reference) if model == "tinypose" else (scenes, picodet_reference)
    single = session.run({"image": inputs[4:5]})
    five = session.run({"image": inputs})
    again = session.run({"image": inputs[4:5]})
    for got, want in zip(five, reference):
        assert got.shape == want.shape == (5, *want.shape[1:])
        assert np.abs(got.astype(np.float64) - want).max() < 1e-2  # boxes are in pixels
    for got_single, got_again, got_five in zip(single, again, five):
        assert got_single.shape[0] == 1
        np.testing.assert_allclose(got_single[0], got_five[4], atol=1e-3)
        np.testing.assert_array_equal(got_single, got_again)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_nms_detector_batches_are_split_and_joined_like_paddle(backend, pictures, model_home):
    """NMS-in-graph exports only run at batch 1: a batch of 2 must still give Paddle's rows and counts."""
    files = find_model_files(model_home / "PicoDet-S_pedestrian_192")
    names = ("basketball1.png", "vtest100")
    feeds = {
        "image": np.stack([to_input(pictures[n], 192, 192) for n in names]),
        "scale_factor": np.array(
            [[192 / pictures[n].shape[0], 192 / pictures[n].shape[1]] for n in names], dtype=np.float32
        ),
    }
    want_rows, want_counts = PaddleSession(files, RuntimeOptions()).run(feeds)
    session = BACKENDS[backend](files, RuntimeOptions(backend=backend, extra={"split_nms": False}))
    assert session.input_names == ["scale_factor", "image"]
    assert session.max_batch == 1
    rows, counts = session.run(feeds)
    np.testing.assert_array_equal(counts, want_counts)
    assert counts.shape == (2,) and counts.min() > 0
    assert rows.shape == want_rows.shape == (int(counts.sum()), 6)
    confident = want_rows[:, 1] > 0.3  # low-score rows may swap places on 1e-6 score ties
    assert np.abs(rows[confident] - want_rows[confident]).max() < 0.01


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_nms_graph_cut_before_its_nms_gives_paddles_boxes_batched(backend, pictures, model_home):
    """By default the NMS tail is cut off (split_nms): any batch runs, the detector does the NMS
    with the graph's own thresholds, and the boxes equal Paddle's in-graph NMS."""
    from streampose.models.detector import Detector  # noqa: PLC0415

    files = find_model_files(model_home / "PicoDet-S_pedestrian_320")
    session = BACKENDS[backend](files, RuntimeOptions(backend=backend))
    assert session.max_batch is None
    settings = session.pre_nms
    assert settings is not None
    assert (round(settings.score_threshold, 3), round(settings.iou_threshold, 3)) == (0.025, 0.6)
    assert (settings.max_per_class, settings.keep_top_k) == (1000, 100)
    images = [pictures[name] for name in ("basketball1.png", "vtest100", "messi5.jpg")]
    reference = Detector(files, RuntimeOptions(backend="paddle")).predict(images, 0.3)
    cut = Detector(files, session=session).predict(images, 0.3)
    assert [len(found) for found in cut] == [len(found) for found in reference]
    assert sum(len(found) for found in cut) >= 5
    for got, want in zip(cut, reference):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)


def test_onnxruntime_gpu_without_cuda_provider_is_one_clear_line(tinypose):
    import onnxruntime  # noqa: PLC0415

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the missing-provider error cannot happen here")
    with pytest.raises(DeviceError) as caught:
        OnnxRuntimeSession(tinypose, RuntimeOptions(backend="onnxruntime", device="gpu:0"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("device gpu:0:") and 'pip install "streampose[gpu]"' in message


def test_onnxruntime_runs_on_gpu_when_cuda_is_there(tinypose, crops, tinypose_reference):
    import onnxruntime  # noqa: PLC0415

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and an NVIDIA GPU")
    options = RuntimeOptions(backend="onnxruntime", device="gpu:0", extra={"tensorrt": False})
    session = OnnxRuntimeSession(tinypose, options)
    assert session.providers[0] == "CUDAExecutionProvider"
    heatmaps, argmax = session.run({"image": crops})
    assert np.abs(heatmaps - tinypose_reference[0]).max() < 1e-3
    assert (argmax == tinypose_reference[1]).mean() > 0.97


def test_openvino_refuses_gpu_and_unknown_precision(tinypose):
    with pytest.raises(DeviceError, match=r"^device gpu:0: .*onnxruntime"):
        OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", device="gpu"))
    with pytest.raises(ConfigError, match=r"^precision 'fp8': .*auto, f32, bf16 or int8$"):
        OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="fp8"))


def test_openvino_bf16_is_selectable_and_stays_close_to_f32(sessions, tinypose, crops):
    """bf16 must really switch precision, yet keep (nearly) every joint within one heatmap cell.

    Measured on this AMX CPU with these 5 crops: max |diff| 0.093 (mean 4.3e-4), peaks move by up
    to 0.078, 6 of 85 joints move by one cell. That is larger than the 1e-2 once noted in
    environment.md, so the bound is 0.15, not 0.05; the default precision is an accuracy decision.
    """
    f32_session = sessions[("openvino", "tinypose")]
    bf16_session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="bf16"))
    assert f32_session.precision == "f32"
    assert bf16_session.precision in ("bf16", "f32")  # f32 where the CPU has no bf16 units
    f32_heatmaps, f32_argmax = f32_session.run({"image": crops})
    bf16_heatmaps, bf16_argmax = bf16_session.run({"image": crops})
    difference = np.abs(bf16_heatmaps - f32_heatmaps)
    print(
        f"\nOpenVINO TinyPose bf16 vs f32 on 5 real crops: max |diff| {difference.max():.3g}, "
        f"mean {difference.mean():.2g}, joints with another argmax {(bf16_argmax != f32_argmax).sum()}/85"
    )
    if bf16_session.precision == "bf16":
        assert difference.max() > 1e-4, "the bf16 hint had no effect"
    assert difference.max() < 0.15 and difference.mean() < 2e-3
    width = f32_heatmaps.shape[-1]
    rows_apart = np.abs(bf16_argmax // width - f32_argmax // width)
    columns_apart = np.abs(bf16_argmax % width - f32_argmax % width)
    # With per-batch static compiles, one joint of 85 (a two-peaked heatmap) was seen to jump to
    # its other peak under bf16; everything else stays within one cell. Accuracy decides bf16.
    assert (np.maximum(rows_apart, columns_apart) > 1).sum() <= 2
    assert (np.maximum(rows_apart, columns_apart) >= 1).sum() <= 12


def test_openvino_folds_tinyposes_channel_shuffles_without_changing_its_output(sessions, tinypose, crops):
    """The shuffle fold (runtime/channel_shuffle.py) must rename channels, never change values.

    Folded and unfolded f32 models differ only in the order a convolution sums its inputs:
    measured max |diff| ~6e-7 on heatmaps peaking at ~0.3, the same argmax everywhere.
    """
    folded = sessions[("openvino", "tinypose")]
    plain = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32",
                                                     extra={"fold_shuffles": False}))
    assert plain.folded is None
    assert folded.folded.shuffles == 49  # every ShuffleNetV2 unit of the 128x96 Lite-HRNet
    runtime_ops = {op.get_type_name() for op in folded._dynamic.get_runtime_model().get_ordered_ops()}
    assert not runtime_ops & {"ShuffleChannels", "Transpose"}, runtime_ops
    # Orders nothing absorbs: narrow tensors are permuted by a 1x1 convolution, wide ones by a Gather.
    gathered = [op.input_value(0).get_partial_shape()[1].get_length()
                for op in folded._model.get_ordered_ops() if op.get_type_name() == "Gather"]
    assert folded.folded.permutations == 7 and len(gathered) == folded.folded.gathers == 13
    assert min(gathered) > PERMUTE_BY_CONVOLUTION_MAX_CHANNELS
    folded_heatmaps, folded_argmax = folded.run({"image": crops})
    plain_heatmaps, plain_argmax = plain.run({"image": crops})
    assert np.abs(folded_heatmaps - plain_heatmaps).max() < 1e-5
    np.testing.assert_array_equal(folded_argmax, plain_argmax)


def test_openvino_fold_leaves_a_model_without_shuffles_alone(sessions):
    report = sessions[("openvino", "picodet")].folded
    assert report.shuffles == 0 and report.gathers == 0 and report.concats == []


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_detector_and_pose_sessions_run_side_by_side_in_threads(
    backend, tinypose, picodet_raw, crops, scenes, tinypose_reference, picodet_reference
):
    """The pipeline runs detector and pose in different threads: sessions must not share state."""
    pose = BACKENDS[backend](tinypose, RuntimeOptions(backend=backend, cpu_threads=1))
    detector = BACKENDS[backend](picodet_raw, RuntimeOptions(backend=backend, cpu_threads=1))
    failures: list[str] = []

    def keep_running(session, inputs, reference):
        for round_number in range(6):
            size = 1 + round_number % 3
            outputs = session.run({"image": inputs[:size]})
            for got, want in zip(outputs, reference):
                if np.abs(got.astype(np.float64) - want[:size]).max() > 1e-2:
                    failures.append(f"{session.backend_name} round {round_number}: wrong output")

    threads = [
        threading.Thread(target=keep_running, args=(pose, crops, tinypose_reference)),
        threading.Thread(target=keep_running, args=(detector, scenes, picodet_reference)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def _copy_model_folder(source: ModelFiles, destination: Path) -> Path:
    destination.mkdir()
    for path in (source.graph, source.params, source.config):
        shutil.copy2(path, destination / path.name)
    return destination


def _make_read_only(folder: Path) -> None:
    for path in folder.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def test_export_goes_to_the_cache_and_is_reused(tinypose, tmp_path, monkeypatch, capfd):
    """Model folders are never written to (read-only or not): the cache keyed by content is used."""
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    folder = _copy_model_folder(tinypose, tmp_path / "PP-TinyPose_128x96")
    _make_read_only(folder)
    before = sorted(p.name for p in folder.iterdir())
    files = find_model_files(folder)

    exported = onnx_path_for(files)
    first_stderr = capfd.readouterr().err
    entry = f"PP-TinyPose_128x96-{model_fingerprint(files)}"
    assert exported == tmp_path / "cache" / "onnx" / entry / ONNX_FILE_NAME
    assert exported.is_file() and exported.stat().st_size > 1_000_000
    assert f"converting {folder} to ONNX once" in first_stderr
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in exported.parent.iterdir()] == [ONNX_FILE_NAME]  # no partial files left

    modified = exported.stat().st_mtime_ns
    assert onnx_path_for(files) == exported
    assert export_onnx(files) == exported
    assert exported.stat().st_mtime_ns == modified
    assert "converting" not in capfd.readouterr().err


def test_changed_weights_get_a_new_cache_entry(tinypose, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    folder = _copy_model_folder(tinypose, tmp_path / "model")
    files = find_model_files(folder)
    original = cached_onnx_path(files)
    assert original.is_relative_to(cache_home()) and not original.is_relative_to(folder)
    weights = bytearray(files.params.read_bytes())
    weights[-1] ^= 0xFF
    files.params.write_bytes(bytes(weights))
    assert cached_onnx_path(files) != original
    assert cached_onnx_path(files).parent.parent == original.parent.parent


def test_explicit_export_output_is_a_working_onnx_model(tinypose, tmp_path, crops, tinypose_reference, capfd):
    out_dir = tmp_path / "shipped"
    out_dir.mkdir()
    exported = export_onnx(tinypose, out_dir)
    assert exported == out_dir / ONNX_FILE_NAME
    # A folder that ships inference.onnx is used as is, without converting again.
    folder = _copy_model_folder(tinypose, tmp_path / "with-onnx")
    shutil.copy2(exported, folder / ONNX_FILE_NAME)
    files = find_model_files(folder)
    capfd.readouterr()
    assert onnx_path_for(files) == folder / ONNX_FILE_NAME
    session = OnnxRuntimeSession(files, RuntimeOptions(backend="onnxruntime"))
    assert "converting" not in capfd.readouterr().err
    assert session.output_names == ["fetch_name_0", "fetch_name_1"]
    heatmaps, _ = session.run({"image": crops[:2]})
    assert np.abs(heatmaps - tinypose_reference[0][:2]).max() < 1e-4


def test_export_failures_are_one_line_model_errors(tinypose, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    folder = _copy_model_folder(tinypose, tmp_path / "truncated")
    (folder / "inference.pdiparams").write_bytes(tinypose.params.read_bytes()[:100_000])
    files = find_model_files(folder)
    with pytest.raises(ModelError) as caught:
        export_onnx(files)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"model {folder}: ONNX conversion failed (")
    assert list((tmp_path / "cache" / "onnx").iterdir()) == []  # no partial file, no empty entry

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match=r"^ONNX export .*: cannot create its folder"):
        export_onnx(tinypose, blocker / "sub" / "inference.onnx")


def test_openvino_with_two_streams_runs_two_callers_at_once_and_right(tinypose, crops, tinypose_reference):
    """The graph's pose workers share one session: each caller needs its own request (pooled),
    and both streams must really run at the same time, not queue behind one another."""
    session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32", streams=2))
    assert session.streams == 2
    batch = crops[:3]
    want = [reference[:3] for reference in tinypose_reference]
    for _ in range(3):  # let the static batch-3 model compile and take over
        session.run({"image": batch})
    deadline = time.monotonic() + 30
    while 3 not in session._static and time.monotonic() < deadline:
        time.sleep(0.05)
        session.run({"image": batch})

    def timed_runs(count: int, failures: list[str]) -> None:
        for _ in range(count):
            for got, expected in zip(session.run({"image": batch}), want):
                if np.abs(got.astype(np.float64) - expected).max() > 1e-3:
                    failures.append("wrong output")

    failures: list[str] = []
    started = time.perf_counter()
    timed_runs(20, failures)
    alone_s = time.perf_counter() - started
    threads = [threading.Thread(target=timed_runs, args=(20, failures)) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    both_s = time.perf_counter() - started
    assert failures == []
    assert sum(len(idle) for idle in session._idle.values()) <= 3  # pool bounded by callers
    # Twice the work in parallel: queued streams would take about 2x as long as one caller.
    print(f"\n20 runs alone {alone_s:.2f} s, 2x20 runs on two streams {both_s:.2f} s")
    assert both_s < 1.7 * alone_s


def _wait_for_compiles(session: OpenVinoSession, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while session._compiling - set(session._static) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_openvino_compiles_only_batch_sizes_that_are_common_lately(tinypose, crops, tinypose_reference):
    """A static model costs ~75 MB: a size met once every ten calls stays on the dynamic one."""
    session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32"))
    for _ in range(5):
        for _ in range(9):
            session.run({"image": crops[:2]})
        heatmaps, _ = session.run({"image": crops[:3]})
    _wait_for_compiles(session)
    assert session.failed_static == {}
    assert 3 not in session._compiling and set(session._static) == {2}  # 5 of 50 calls, 10 apart
    assert np.abs(heatmaps - tinypose_reference[0][:3]).max() < 1e-3
    for _ in range(2):  # now three of the last twenty: batch 3 is worth its own model
        session.run({"image": crops[:3]})
    _wait_for_compiles(session)
    assert set(session._static) == {2, 3}


def test_openvino_keeps_a_bounded_set_of_static_models_evicting_the_least_recently_used(
        tinypose, crops, tinypose_reference):
    """A camera's crowd size wanders for weeks: static models (~100 MB each) must not pile up.
    A new common size replaces the least recently used model once that one has gone unused for
    a while; until then the new size runs on the dynamic model, with the same outputs."""
    session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32"))
    session.max_static_models, session.evict_after_idle_calls = 2, 10

    def run_checked(size: int, times: int) -> None:
        for _ in range(times):
            heatmaps, _ = session.run({"image": crops[:size]})
            assert np.abs(heatmaps - tinypose_reference[0][:size]).max() < 1e-3
        _wait_for_compiles(session)

    run_checked(2, 3)  # calls 1-3
    run_checked(3, 3)  # calls 4-6
    assert list(session._static) == [2, 3]
    run_checked(2, 1)  # call 7: 2 becomes the most recently used
    run_checked(4, 9)  # calls 8-16: 4 is common, but 3 ran only 10 calls ago: no room
    assert list(session._static) == [3, 2] and 4 not in session._compiling
    run_checked(4, 1)  # call 17: 3 has been idle for 11 calls and gives its place to 4
    assert list(session._static) == [2, 4]
    assert 3 not in session._idle  # the evicted model's requests are not kept alive by the pool
    run_checked(3, 1)  # call 18: 3 is common again (4 of the last 20), 2 idle for 11 calls
    assert list(session._static) == [4, 3]


def test_openvino_preload_compiles_and_warms_sizes_before_the_first_call(tinypose, crops, tinypose_reference):
    """A live source's shapes are compiled before its first frame, each with a request that has
    already run once (a compiled model's first run is ~10x slower), and calls use them at once."""
    session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32"))
    assert session.preload([1, 2, 2, 0, 99]) == [1, 2]  # duplicates, 0 and over the limit skipped
    assert set(session._static) == {1, 2} and not session._compiling
    assert [len(session._idle[size]) for size in (1, 2)] == [1, 1]  # the warmed-up requests
    assert session.preload([2, 1]) == []  # already there: nothing to do
    warmed = session._idle[2][0]
    heatmaps, _ = session.run({"image": crops[:2]})  # the first call: static model, warm request
    assert session._idle[2] == [warmed] and session._idle[None] and len(session._idle) == 3
    assert np.abs(heatmaps - tinypose_reference[0][:2]).max() < 1e-3
    session.max_static_models = 3
    assert session.preload([3, 4, 5]) == [3]  # the session's bound of static models holds


def test_openvino_releases_preloaded_sizes_that_no_call_used(tinypose, crops):
    """A preload is a guess at the crowd: a size still unused after a while gives its memory back."""
    session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32"))
    session.evict_after_idle_calls = 5
    assert session.preload([1, 3]) == [1, 3]
    for _ in range(5):
        session.run({"image": crops[:1]})
    assert set(session._static) == {1, 3}  # not yet: 5 calls, not more
    session.run({"image": crops[:1]})
    assert set(session._static) == {1} and 3 not in session._idle
    for _ in range(10):  # the used size stays; nothing is left to release
        session.run({"image": crops[:1]})
    assert set(session._static) == {1} and not session._preloaded_unused


def test_openvino_keeps_compiled_models_in_the_user_cache_and_answers_the_same_from_it(
        tinypose, crops, tinypose_reference, tmp_path, monkeypatch):
    """Compiling PP-TinyPose costs ~1.2 s of CPU; a later process loads it back from the cache."""
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "openvino"
    options = RuntimeOptions(backend="openvino", precision="f32")
    first = OpenVinoSession(tinypose, options).run({"image": crops})
    entries = sorted(path.name for path in folder.iterdir())
    assert entries, "nothing was cached"
    again = OpenVinoSession(tinypose, options).run({"image": crops})  # same model: a cache hit
    assert sorted(path.name for path in folder.iterdir()) == entries
    for got, cached, expected in zip(first, again, tinypose_reference):
        np.testing.assert_array_equal(got, cached)
        assert np.abs(got.astype(np.float64) - expected).max() < 1e-4

    monkeypatch.setenv("STREAMPOSE_OPENVINO_CACHE", "0")
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "other"))
    OpenVinoSession(tinypose, options).run({"image": crops})
    assert not (tmp_path / "other" / "openvino").exists()


def test_compiles_from_several_threads_leave_the_process_locale_alone(
        tinypose, picodet_raw, tmp_path, monkeypatch):
    """OpenVINO switches the whole process to the C locale while it reads or writes a cache entry.

    Two such compiles at once (the graph builds its detector and pose sessions on different
    threads) restore each other's "C", and the process stayed in C: ASCII text I/O for the caller.
    """
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    locale_before = locale.setlocale(locale.LC_CTYPE)
    options = RuntimeOptions(backend="openvino", precision="f32")
    try:
        _compile_in_threads(tinypose, picodet_raw, options, locale_before)
    finally:
        locale.setlocale(locale.LC_CTYPE, locale_before)  # a failure must not leak into other tests


def _compile_in_threads(tinypose: ModelFiles, picodet_raw: ModelFiles, options: RuntimeOptions,
                        locale_before: str) -> None:
    for _ in range(3):  # the first round fills the cache, the others load from it
        errors: list[BaseException] = []

        def build(files: ModelFiles) -> None:
            try:
                OpenVinoSession(files, options)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        builders = [threading.Thread(target=build, args=(files,))
                    for files in (tinypose, picodet_raw, tinypose, picodet_raw)]
        for builder in builders:
            builder.start()
        for builder in builders:
            builder.join()
        assert errors == []
        assert locale.setlocale(locale.LC_CTYPE) == locale_before


def test_openvino_runs_without_a_writable_cache(tinypose, crops, tinypose_reference, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(blocker))
    heatmaps, _ = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32")).run(
        {"image": crops})
    assert np.abs(heatmaps - tinypose_reference[0]).max() < 1e-4
