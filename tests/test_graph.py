"""The threaded streaming graph: queue policies, error propagation, stopping, per-stage figures.

Queues are tested on their own; everything else runs the real graph on real models and a short
clip cut from vtest.avi, so a failure here is a failure users would meet. Faults are injected
with small wrappers around the real objects (a detector that fails on its second call, a sink
that raises), never with mocks of the graph itself.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from streampose.errors import InputError
from streampose.graph.api import RunOutputs, run_stream
from streampose.graph.queues import Closed, StageQueue
from streampose.graph.runner import FrameOutput, StreamGraph, StreamSettings
from streampose.runtime import available_backends
from streampose.sinks.video import VideoWriter
from streampose.sources import VideoFileSource, open_source

CLIP_FRAMES = 24
THREAD_PREFIX = "streampose-"


def fastest_backend() -> str:
    """OpenVINO, then ONNX Runtime, then Paddle: the same results (parity tests), less CPU time."""
    installed = available_backends()
    return next(name for name in ("openvino", "onnxruntime", "paddle") if name in installed)


def graph_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(THREAD_PREFIX)]


def wait_for_no_graph_threads(limit_s: float = 5.0) -> list[str]:
    """Names of graph threads still alive after ``limit_s`` (empty when all ended)."""
    deadline = time.monotonic() + limit_s
    while graph_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    return [thread.name for thread in graph_threads()]


def write_vtest_clip(samples_dir: Path, target: Path, frames: int) -> Path:
    """The first ``frames`` frames of vtest.avi re-encoded (H.264, 10 fps) into ``target``."""
    with av.open(str(samples_dir / "vtest.avi")) as container:
        stream = container.streams.video[0]
        images = [frame.to_ndarray(format="bgr24")
                  for frame in itertools.islice(container.decode(stream), frames)]
    height, width = images[0].shape[:2]
    with VideoWriter(target, 10, (width, height)) as writer:
        for index, image in enumerate(images):
            writer.write(image, index / 10)
    return target


def outputs_left(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture(scope="module")
def pipeline(model_home):
    from streampose import create_pipeline

    return create_pipeline("human_keypoint_detection", backend=fastest_backend())


@pytest.fixture(scope="module")
def clip(samples_dir, tmp_path_factory) -> Path:
    return write_vtest_clip(samples_dir, tmp_path_factory.mktemp("graph") / "clip.mp4", CLIP_FRAMES)


# -- queues --------------------------------------------------------------------------------------


def test_drop_oldest_queue_keeps_the_newest_items_and_counts_drops():
    queue: StageQueue[int] = StageQueue(3, threading.Event(), drop_oldest=True)
    dropped = [queue.put(item) for item in range(7)]
    assert dropped == [None, None, None, 0, 1, 2, 3]
    assert queue.dropped == 4
    assert queue.max_depth == 3
    assert [queue.get() for _ in range(len(queue))] == [4, 5, 6]


def test_blocking_put_waits_for_room_and_loses_nothing():
    queue: StageQueue[int] = StageQueue(2, threading.Event())
    queue.put(0)
    queue.put(1)
    put_done = threading.Event()

    def producer() -> None:
        queue.put(2)
        put_done.set()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    assert not put_done.wait(0.3), "put on a full queue returned without room"
    assert queue.get() == 0
    assert put_done.wait(2.0), "put did not resume once the consumer made room"
    assert [queue.get(), queue.get()] == [1, 2]
    assert queue.dropped == 0 and queue.max_depth == 2
    thread.join(2)


def test_blocked_put_and_get_raise_closed_soon_after_stop():
    stop = threading.Event()
    full: StageQueue[int] = StageQueue(1, stop)
    full.put(0)
    empty: StageQueue[int] = StageQueue(1, stop)
    outcomes: dict[str, tuple[str, float]] = {}

    def attempt(name: str, call) -> None:
        try:
            call()
            outcomes[name] = ("returned", time.monotonic())
        except Closed:
            outcomes[name] = ("closed", time.monotonic())

    threads = [threading.Thread(target=attempt, args=("put", lambda: full.put(1)), daemon=True),
               threading.Thread(target=attempt, args=("get", empty.get), daemon=True)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert not outcomes, "a wait ended before anything happened"
    stopped_at = time.monotonic()
    stop.set()
    for thread in threads:
        thread.join(2.0)
    assert {name: kind for name, (kind, _) in outcomes.items()} == {"put": "closed", "get": "closed"}
    assert max(at for _, at in outcomes.values()) - stopped_at < 0.5
    assert len(full) == 1  # the refused item was not added


def test_forced_put_lets_the_end_marker_through_a_full_queue():
    queue: StageQueue[object] = StageQueue(1, threading.Event())
    queue.put("frame")
    marker = object()
    assert queue.put(marker, force=True) is None
    assert queue.get() == "frame" and queue.get() is marker
    assert queue.max_depth == 2


def test_queue_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        StageQueue(0, threading.Event())


# -- the graph on real models ---------------------------------------------------------------------


def test_a_file_flows_through_every_stage_in_order_and_is_counted(pipeline, clip):
    outputs: list[FrameOutput] = []
    finished = []
    source = VideoFileSource(clip)
    settings = StreamSettings(det_interval=1, queue_size=2, det_threshold=pipeline.det_threshold)
    graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [outputs.append],
                        finishers=[lambda: finished.append(True)])
    graph.run()
    source.close()

    assert [output.frame.index for output in outputs] == list(range(CLIP_FRAMES))
    assert all(output.detected for output in outputs)  # det_interval 1: the detector sees every frame
    assert sum(len(output.persons) for output in outputs) > 2 * CLIP_FRAMES  # vtest is a busy street
    assert finished == [True]
    summary = graph.summary()
    assert {stage["stage"]: stage["items"] for stage in summary["stages"]} == {
        "decode": CLIP_FRAMES, "detect": CLIP_FRAMES, "track": CLIP_FRAMES, "pose": CLIP_FRAMES,
        "sink": CLIP_FRAMES}
    assert summary["frames"] == summary["detector_frames"] == CLIP_FRAMES
    assert summary["persons"] == sum(len(output.persons) for output in outputs)
    assert summary["dropped"] == 0 and summary["decode_error"] is None
    # A file never drops, so queues fill to their size, plus one slot for the end marker.
    assert all(1 <= depth <= settings.queue_size + 1 for depth in summary["queue_max_depth"].values())
    latency = summary["latency"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"]
    assert wait_for_no_graph_threads() == []


def test_a_failing_sink_stops_the_graph_and_aborts_the_outputs(pipeline, samples_dir, tmp_path):
    """A frame of another size makes the video sink raise; nothing may be left looking complete.

    Bug (runner.py, ``_sink_loop``): the finishers run in its ``finally`` before ``_guard`` records
    the error, so ``finish(graph.error is not None)`` sees no error and *closes* the writers: the
    CLI prints an error yet leaves a one-frame video and a JSON file behind as if good.
    """
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(samples_dir / "basketball1.png", images / "1.png")  # 640x480
    shutil.copy(samples_dir / "messi5.jpg", images / "2.jpg")  # 548x342: the writer refuses it
    results = tmp_path / "results"
    results.mkdir()
    outputs = RunOutputs(results / "out.mp4", str(results / "out.jsonl"), show=False, hud=True)
    settings = StreamSettings(det_interval=1, det_threshold=pipeline.det_threshold)

    started = time.monotonic()
    with pytest.raises(InputError, match="frame 1 is 548x342"):
        run_stream(pipeline, str(images), settings, outputs, progress=False)
    assert time.monotonic() - started < 10
    assert wait_for_no_graph_threads() == []
    assert outputs_left(results) == [], "a failed run left outputs behind"


def test_a_failing_detector_stops_the_graph_without_hanging(pipeline, clip, tmp_path):
    class DetectorFailingOnSecondCall:
        """The real detector, until its second call."""

        def __init__(self, real) -> None:
            self.real, self.calls = real, 0

        def predict(self, images, threshold=None):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("detector exploded on purpose")
            return self.real.predict(images, threshold)

    failing = SimpleNamespace(detector=DetectorFailingOnSecondCall(pipeline.detector),
                              keypoint_model=pipeline.keypoint_model)
    outputs = RunOutputs(tmp_path / "out.mp4", str(tmp_path / "out.jsonl"), show=False, hud=True)
    settings = StreamSettings(det_interval=1, det_threshold=pipeline.det_threshold)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exploded on purpose"):
        run_stream(failing, str(clip), settings, outputs, progress=False)
    assert time.monotonic() - started < 15
    assert failing.detector.calls == 2  # the graph stopped: no detection after the failure
    assert wait_for_no_graph_threads() == []
    assert outputs_left(tmp_path) == [], "a failed run left outputs behind"


def test_stop_ends_every_stage_promptly_while_queues_are_full(pipeline, clip):
    sink_started = threading.Event()

    def slow_sink(output: FrameOutput) -> None:
        sink_started.set()
        time.sleep(0.3)

    source = VideoFileSource(clip)
    settings = StreamSettings(det_interval=3, queue_size=2, det_threshold=pipeline.det_threshold)
    finished = []
    graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [slow_sink],
                        finishers=[lambda: finished.append(True)])
    graph.start()
    assert sink_started.wait(30)
    time.sleep(1.0)  # upstream stages now wait on full queues (files apply backpressure)
    assert graph.summary()["queue_max_depth"]["posed"] == settings.queue_size
    stopped_at = time.monotonic()
    graph.stop()
    assert graph.wait(5.0), "graph threads still alive after stop()"
    # The sink finishes the frame it holds (≤ 0.3 s); every queue wait gives up within 0.05 s.
    assert time.monotonic() - stopped_at < 1.5
    assert finished == [True]
    assert graph.error is None
    assert graph.frames_out < CLIP_FRAMES
    source.close()
    assert wait_for_no_graph_threads() == []


def test_stage_times_exclude_waiting_for_a_slow_sink(pipeline):
    """A stage's mean ms is its own work; blocked time on a full queue belongs to the slow stage.

    testsrc2 has no person, so posing costs nothing: a pose mean near the sink's sleep means the
    pose stage timed its wait on the full output queue. Bug (runner.py, ``_pose_loop``):
    ``stats.record`` runs after the ``self.posed.put`` calls; record before putting.
    """
    sink_s = 0.3  # well above a detector call even on a busy machine, so the sink is the bottleneck

    def slow_sink(output: FrameOutput) -> None:
        time.sleep(sink_s)

    source = open_source("lavfi:testsrc2=size=320x240:rate=25:duration=2")
    settings = StreamSettings(det_interval=3, queue_size=2, det_threshold=pipeline.det_threshold)
    graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [slow_sink])
    graph.run()
    source.close()
    stages = {stage["stage"]: stage for stage in graph.summary()["stages"]}
    assert stages["sink"]["mean_ms"] >= sink_s * 1000
    assert graph.persons_posed == 0
    assert stages["pose"]["mean_ms"] < 0.25 * stages["sink"]["mean_ms"], stages["pose"]


class CallSizes:
    """The real keypoint model, recording how many crops each call holds."""

    def __init__(self, real) -> None:
        self.real, self.sizes = real, []
        self.streams, self.input_wh = real.streams, real.input_wh
        self._lock = threading.Lock()

    def predict_many(self, images, boxes_per_image):
        with self._lock:  # two pose workers call at once
            self.sizes.append(sum(len(boxes) for boxes in boxes_per_image))
        return self.real.predict_many(images, boxes_per_image)


def test_frames_match_across_two_graphs_with_every_frame_detected(pipeline, clip):
    """det_interval 1 is deterministic: the threads' timing must not change any result."""
    def collect() -> list[list[np.ndarray]]:
        found: list[list[np.ndarray]] = []
        source = VideoFileSource(clip)
        settings = StreamSettings(det_interval=1, queue_size=3, det_threshold=pipeline.det_threshold)
        sink = lambda output: found.append([person.keypoints for person in output.persons])  # noqa: E731
        StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [sink]).run()
        source.close()
        return found

    first, second = collect(), collect()
    assert [len(frame) for frame in first] == [len(frame) for frame in second]
    for frame_a, frame_b in zip(first, second):
        for person_a, person_b in zip(frame_a, frame_b):
            np.testing.assert_allclose(person_a, person_b, atol=1e-3)


def test_two_pose_workers_give_the_same_frames_as_one(pipeline, clip):
    """Frames are dealt to the pose workers in turn and collected in turn: order, ids and
    keypoints must not depend on how many workers there are, or on their timing."""
    def collect(workers: int) -> list[tuple[int, list[int | None], list[np.ndarray]]]:
        found = []
        source = VideoFileSource(clip)
        settings = StreamSettings(det_interval=3, queue_size=2, pose_workers=workers,
                                  det_threshold=pipeline.det_threshold)
        sink = lambda output: found.append((output.frame.index, [p.track_id for p in output.persons],  # noqa: E731
                                            [p.keypoints for p in output.persons]))
        graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [sink])
        assert graph.pose_workers == workers
        graph.run()
        source.close()
        return found

    one, two = collect(1), collect(2)
    assert [index for index, _, _ in two] == list(range(CLIP_FRAMES))
    assert [ids for _, ids, _ in one] == [ids for _, ids, _ in two]
    assert sum(len(ids) for _, ids, _ in one) > 2 * CLIP_FRAMES
    for (_, _, keypoints_a), (_, _, keypoints_b) in zip(one, two):
        for person_a, person_b in zip(keypoints_a, keypoints_b):
            np.testing.assert_allclose(person_a, person_b, atol=1e-3)
    assert wait_for_no_graph_threads() == []


def test_files_pose_fixed_size_calls_across_frames_with_the_same_results(pipeline, clip):
    """Files pack persons of consecutive frames into calls of ``pose_batch``: one static model
    shape to compile. The keypoints must be those of posing each person on its own."""
    def collect(pose_batch: int):
        model = CallSizes(pipeline.keypoint_model)
        found = []
        source = VideoFileSource(clip)
        settings = StreamSettings(det_interval=3, queue_size=2, pose_batch=pose_batch,
                                  det_threshold=pipeline.det_threshold)
        sink = lambda output: found.append(([p.track_id for p in output.persons],  # noqa: E731
                                            [p.keypoints for p in output.persons]))
        graph = StreamGraph(source, pipeline.detector, model, settings, [sink])
        graph.run()
        source.close()
        stages = {stage["stage"]: stage["items"] for stage in graph.summary()["stages"]}
        assert stages["pose"] == stages["sink"] == CLIP_FRAMES
        return found, model.sizes

    packed, packed_sizes = collect(8)
    alone, alone_sizes = collect(1)
    persons = sum(len(ids) for ids, _ in packed)
    assert persons > 2 * CLIP_FRAMES
    assert set(alone_sizes) <= {0, 1}
    # Every call of 8, but the last, or one closed early by a run of frames with few persons.
    assert sum(packed_sizes) == persons and packed_sizes.count(8) >= persons // 8 - 2
    assert len(packed) == CLIP_FRAMES
    assert [ids for ids, _ in packed] == [ids for ids, _ in alone]
    for (_, keypoints_a), (_, keypoints_b) in zip(packed, alone):
        for person_a, person_b in zip(keypoints_a, keypoints_b):
            np.testing.assert_allclose(person_a, person_b, atol=1e-3)
    assert wait_for_no_graph_threads() == []


def test_files_pose_calls_by_default_hold_fewer_large_crops(pipeline, model_home, clip):
    """Without ``pose_batch`` a file's calls hold 8 crops of 128x96 but 4 of 256x192: larger crops
    fill the caches with fewer persons (runner.POSE_BATCH_* has the measurements)."""
    from streampose.models.folder import find_model_files  # noqa: PLC0415
    from streampose.models.keypoints import KeypointModel  # noqa: PLC0415
    from streampose.runtime import RuntimeOptions  # noqa: PLC0415

    large = KeypointModel(find_model_files(model_home / "PP-TinyPose_256x192"),
                          RuntimeOptions(backend=fastest_backend()))
    sizes = {}
    for name, real in (("128x96", pipeline.keypoint_model), ("256x192", large)):
        model = CallSizes(real)
        source = VideoFileSource(clip)
        graph = StreamGraph(source, pipeline.detector, model,
                            StreamSettings(det_interval=3, queue_size=2, det_threshold=pipeline.det_threshold),
                            [lambda output: None])
        graph.run()
        source.close()
        sizes[name] = model.sizes
    assert sum(sizes["128x96"]) == sum(sizes["256x192"]) > 2 * CLIP_FRAMES
    assert max(sizes["128x96"]) == 8 and max(sizes["256x192"]) == 4
    assert sizes["256x192"].count(4) >= sum(sizes["256x192"]) // 4 - 2
    assert wait_for_no_graph_threads() == []


def test_a_live_source_is_read_only_once_the_shapes_of_its_frames_are_compiled(model_home, clip):
    """Compiled on demand, a camera's first seconds met a compile per new size (latency spikes,
    drops); a live graph compiles the detector's size and the first pose sizes before its first
    read.
    A file compiles nothing ahead: its calls are all of one size, compiled as it goes."""
    from streampose import create_pipeline  # noqa: PLC0415

    fresh = create_pipeline("human_keypoint_detection", backend="openvino")
    compiled_at_first_read = []

    def watched(live: bool) -> VideoFileSource:
        class Watched(VideoFileSource):
            is_live = live

            def _frames(self):
                compiled_at_first_read.append((sorted(fresh.detector.session._static),
                                               sorted(fresh.keypoint_model.session._static)))
                yield from itertools.islice(super()._frames(), 4)

        return Watched(clip)

    settings = StreamSettings(det_interval=1, det_threshold=fresh.det_threshold)
    for live in (False, True):
        found = []
        source = watched(live)
        graph = StreamGraph(source, fresh.detector, fresh.keypoint_model, settings, [found.append])
        graph.run()
        source.close()
        # Unpaced, a live source outruns the graph and its oldest frames are dropped (counted).
        assert found and len(found) + graph.dropped == 4 and all(output.persons for output in found)
    (file_detector, file_pose), (live_detector, live_pose) = compiled_at_first_read
    assert file_detector == [] and file_pose == []
    assert live_detector == [1] and live_pose == [1, 2, 3, 4]  # one pose worker: crowds up to 4


def test_a_camera_named_by_the_user_is_opened_only_after_the_models_are_prepared(model_home, monkeypatch):
    """A camera opened before a 1-3 s compile would stream into a buffer meanwhile, and its first
    frames would come stale: run_stream prepares first, then opens the live source."""
    import streampose.graph.api as api  # noqa: PLC0415
    from streampose import create_pipeline  # noqa: PLC0415

    fresh = create_pipeline("human_keypoint_detection", backend="openvino")
    compiled_at_open = []

    def recording_open(spec, **options):
        compiled_at_open.append(sorted(fresh.keypoint_model.session._static))
        return open_source(spec, **options)

    monkeypatch.setattr(api, "open_source", recording_open)
    settings = StreamSettings(det_threshold=fresh.det_threshold)
    summary = run_stream(fresh, "lavfi:testsrc2=size=160x120:rate=25:duration=0.2", settings,
                         RunOutputs(None, None, False, False), progress=False)
    assert summary["frames"] + summary["dropped"] == 5
    assert compiled_at_open == [[1, 2, 3, 4]]


def test_live_frames_share_their_persons_over_both_pose_workers_with_the_same_results(pipeline, clip):
    """A live frame is posed at once, its persons split over the calls that run side by side
    (its latency is then the longer half, not the whole): same persons and keypoints as a file."""
    from streampose.bench import PacedFileSource  # noqa: PLC0415 - a live-flagged file source

    def collect(source, pose_workers: int):
        model = CallSizes(pipeline.keypoint_model)
        found = []
        settings = StreamSettings(det_interval=1, pose_workers=pose_workers, pose_batch=1,
                                  det_threshold=pipeline.det_threshold)
        sink = lambda output: found.append((output.frame.index, [p.keypoints for p in output.persons]))  # noqa: E731
        graph = StreamGraph(source, pipeline.detector, model, settings, [sink])
        graph.run()
        source.close()
        return found, model.sizes, graph.dropped

    live, live_sizes, dropped = collect(PacedFileSource(str(clip), 6.0), 2)  # slow enough to drop nothing
    alone, _, _ = collect(VideoFileSource(clip), 1)
    assert dropped == 0 and [index for index, _ in live] == list(range(CLIP_FRAMES))
    counts = [len(persons) for _, persons in alone]
    assert sum(counts) > 2 * CLIP_FRAMES
    halves = [size for n in counts for size in ([n // 2, n - n // 2] if n > 1 else [n])]
    assert sorted(live_sizes) == sorted(halves)
    for (_, persons_live), (_, persons_alone) in zip(live, alone):
        assert len(persons_live) == len(persons_alone)
        for person_live, person_alone in zip(persons_live, persons_alone):
            np.testing.assert_allclose(person_live, person_alone, atol=1e-3)
    assert wait_for_no_graph_threads() == []
