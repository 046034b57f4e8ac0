"""The threaded producer–consumer graph: decode → detect+track → pose (workers) → render+sinks.

Each stage is a thread joined to the next by bounded :class:`StageQueue`s. Files apply
backpressure (every frame is processed); live sources drop the oldest decoded frame when the rest
of the graph falls behind, and count it. The first exception in any stage stops every stage and is
re-raised by :meth:`StreamGraph.run`; end of input flows through as a marker so sinks flush.

Why this shape (measured on a 2-core CPU, vtest.avi): posing is 60% of the work, so it must not
sit on one core. The track stage decides, in frame order, which frames run the detector and which
boxes each frame poses; the pose stage is then stateless and runs several calls at once
(``pose_workers``, one per stream of the pose model). For files the track stage packs the persons
of consecutive frames into calls of ``pose_batch`` persons (:mod:`streampose.graph.chunks`: one
static model shape to compile instead of one per crowd size); a live frame is posed alone, its
persons split over the workers so its latency is the longer half (:class:`FrameSplitter`). Calls
are dealt to the workers in turn and collected in the same turn, so the sink sees them in order
without a reorder buffer, and joins the frames that spanned two calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streampose.graph.chunks import Chunk, FrameSplitter, PersonPacker
from streampose.graph.persons import Person, PersonFinisher, PersonPlanner, PoseRequest
from streampose.graph.queues import Closed, StageQueue
from streampose.graph.stats import LatencyTracker, StageStats
from streampose.models.detector import Detector
from streampose.models.keypoints import KeypointModel, PoseBatch
from streampose.sources.base import Frame, FrameSource
from streampose.tracking import TrackerConfig

END = object()  # end-of-input marker, passed through every queue
# Live sources: the pose-call sizes of crowds up to this many persons are compiled before the
# first frame, at most LIVE_PRELOAD_SIZES of them (the backend's ``preload``: 0.3 s and ~65 MB
# a size from the compile cache): 1-4 for two pose workers, crowds up to 4 for one.
LIVE_PRELOAD_PERSONS = 8
LIVE_PRELOAD_SIZES = 4


@dataclass(frozen=True)
class StreamSettings:
    """Plain, picklable settings of one streaming run."""

    det_interval: int = 3
    det_threshold: float | None = None
    smooth: bool = False
    queue_size: int = 4
    # Pose calls run at once; None: as many as the pose model runs in parallel (its ``streams``).
    pose_workers: int | None = None
    # Persons per pose call for files, across frames (live sources pose each frame alone);
    # None: by the pose model's input size (:func:`pose_batch_for`).
    pose_batch: int | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class FrameOutput:
    """Everything known about one processed frame, handed to sinks."""

    frame: Frame
    persons: list[Person]
    detected: bool
    decoded_at: float  # perf_counter when the frame left the decoder


@dataclass
class _Work:
    frame: Frame
    decoded_at: float
    request: PoseRequest | None = None
    pose_parts: list[PoseBatch] = field(default_factory=list)  # one per chunk the frame spans


@dataclass
class _PosedChunk:
    chunk: Chunk[_Work]
    poses: list[PoseBatch]  # one per piece


def _joined(parts: list[PoseBatch]) -> PoseBatch:
    """A frame's poses from the chunks it spanned (nearly always one)."""
    if len(parts) == 1:
        return parts[0]
    return PoseBatch(np.concatenate([part.keypoints for part in parts]),
                     np.concatenate([part.scores for part in parts]))


# Persons per pose call for files, by crop size. Measured on the AVX2 EPYC (f32, one thread, ms
# of CPU per person at batch 1 / 2 / 3 / 4 / 6 / 8): TinyPose 256x192 14.9 / 14.2 / 14.0 / 14.1 /
# 14.7 / 15.1, and vtest.avi in the graph 18.2-18.3 fps at 4 against 17.3-17.5 at 8 and 16.7-17.2
# at 2; 128x96 is flat from 8 to 16 (3.67 / 3.64 / 3.64 at 8 / 12 / 16) and slower below 8.
# Larger crops fill the caches with fewer persons.
POSE_BATCH_SMALL_CROPS = 8
POSE_BATCH_LARGE_CROPS = 4
SMALL_CROP_PIXELS = 128 * 96


def pose_batch_for(settings: StreamSettings, keypoint_model: KeypointModel) -> int:
    """Persons per file pose call: the settings' count, else by the pose model's input size."""
    if settings.pose_batch is not None:
        return max(1, int(settings.pose_batch))
    width, height = keypoint_model.input_wh
    return POSE_BATCH_SMALL_CROPS if width * height <= SMALL_CROP_PIXELS else POSE_BATCH_LARGE_CROPS


def pose_workers_for(settings: StreamSettings, keypoint_model: KeypointModel) -> int:
    """Pose calls in flight at once: the settings' count, else the pose model's streams."""
    return max(1, int(settings.pose_workers or keypoint_model.streams))


def prepare_for_live(detector: Detector, keypoint_model: KeypointModel, pose_workers: int) -> None:
    """Compile the model shapes a live frame uses before the first one arrives.

    A live frame runs the detector alone and shares its persons out over the pose workers, so
    the sizes are 1 for the detector and 1..ceil(LIVE_PRELOAD_PERSONS / workers) for pose, at
    most LIVE_PRELOAD_SIZES of them. Done on demand instead, the compiles compete with the first
    seconds of posing (latency spikes and drops); bigger crowds still compile their sizes on
    demand. Backends without static shapes to compile (no ``preload``) are left alone; repeated
    calls cost nothing.
    """
    largest = min(LIVE_PRELOAD_SIZES, -(-LIVE_PRELOAD_PERSONS // max(1, pose_workers)))
    for model, sizes in ((detector, [1]), (keypoint_model, range(1, largest + 1))):
        preload = getattr(getattr(model, "session", None), "preload", None)
        if preload is not None:
            preload(sizes)


class StreamGraph:
    """One source through the models into any number of sinks (callables on :class:`FrameOutput`)."""

    def __init__(self, source: FrameSource, detector: Detector, keypoint_model: KeypointModel,
                 settings: StreamSettings, sinks: list[Callable[[FrameOutput], None]],
                 finishers: list[Callable[[], None]] | None = None) -> None:
        self.source = source
        self.detector = detector
        self.keypoint_model = keypoint_model
        self.settings = settings
        self.sinks = sinks
        self.finishers = finishers or []
        self.planner = PersonPlanner(settings.det_interval, settings.tracker)
        self.finisher = PersonFinisher(settings.smooth)
        self.stop_event = threading.Event()
        live = bool(source.is_live)
        size = settings.queue_size
        self.pose_workers = pose_workers_for(settings, keypoint_model)
        # Live: only the decoder's queue may hold a backlog (it drops the oldest); later queues
        # stay minimal, so a frame waits behind as few others as possible.
        inner = min(size, 1) if live else size
        # A live backlog is stale frames: keep two, so a frame waits behind at most one other.
        self.decoded: StageQueue[_Work] = StageQueue(min(size, 2) if live else size, self.stop_event,
                                                     drop_oldest=live)
        # At most half a call's worth of frames per call: sparse scenes do not pile frames up.
        batch = pose_batch_for(settings, keypoint_model)
        self.packer = (FrameSplitter(self.pose_workers) if live
                       else PersonPacker(batch, max_frames=max(1, batch // 2)))
        self.to_pose: list[StageQueue[Chunk[_Work]]] = [StageQueue(inner, self.stop_event)
                                                        for _ in range(self.pose_workers)]
        self.posed: list[StageQueue[_PosedChunk]] = [StageQueue(inner, self.stop_event)
                                                    for _ in range(self.pose_workers)]
        self.stats = {name: StageStats(name) for name in ("decode", "detect", "track", "pose", "sink")}
        self.latency = LatencyTracker()
        self.error: BaseException | None = None
        self.error_stage: str | None = None
        self.frames_out = 0
        self.detector_runs = 0
        self.persons_posed = 0
        self.track_ids: set[int] = set()
        self.finished = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- control ---------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self.decoded.dropped + int(getattr(self.source.stats, "dropped", 0))

    def start(self) -> None:
        if self.source.is_live:
            prepare_for_live(self.detector, self.keypoint_model, self.pose_workers)
            self.source.skip_backlog()
        stages: list[tuple[str, Callable[[], None]]] = [("decode", self._decode_loop), ("track", self._track_loop)]
        stages += [(f"pose-{slot}", lambda slot=slot: self._pose_loop(slot)) for slot in range(self.pose_workers)]
        stages.append(("sink", self._sink_loop))
        for name, target in stages:
            thread = threading.Thread(target=self._guard, args=(name, target), name=f"streampose-{name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop promptly: the source stops reading, every queue wait gives up."""
        self.stop_event.set()
        self.source.stop()

    def request_finish(self) -> None:
        """End the input early but let frames already decoded flow to the sinks (Ctrl-C on a file)."""
        self.source.stop()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self._threads)

    def run(self) -> None:
        """Start, wait for the end (or Ctrl-C), join every thread, re-raise the first error."""
        self.start()
        try:
            while not self.finished.wait(0.2):
                if self.stop_event.is_set() and not any(t.is_alive() for t in self._threads[1:]):
                    break
        except KeyboardInterrupt:
            self.request_finish()
            if not self.finished.wait(10.0):
                self.stop()
            self.wait(10.0)
            raise
        finally:
            self.stop()
            self.wait(30.0)
        if self.error is not None:
            raise self.error

    def _guard(self, name: str, target: Callable[[], None]) -> None:
        try:
            target()
        except Closed:
            pass
        except BaseException as exc:  # noqa: BLE001 - the first error of any stage stops the graph
            if self.error is None:
                self.error, self.error_stage = exc, name
            self.stop()

    # -- stages ----------------------------------------------------------------------------------
    def _decode_loop(self) -> None:
        stats = self.stats["decode"]
        started = time.perf_counter()
        try:
            for frame in self.source:
                now = time.perf_counter()
                stats.record(now - started)
                self.decoded.put(_Work(frame, now))
                if self.stop_event.is_set():
                    break
                started = time.perf_counter()
        finally:
            self.decoded.put(END, force=True)

    def _track_loop(self) -> None:
        """Frame order: detect when due, advance the tracker, deal full pose calls in turn."""
        detect_stats, track_stats = self.stats["detect"], self.stats["track"]
        threshold = self.settings.det_threshold
        turn = 0

        def deal(chunk: Chunk[_Work]) -> None:
            nonlocal turn
            self.to_pose[turn].put(chunk)
            turn = (turn + 1) % self.pose_workers

        try:
            while True:
                work = self.decoded.get()
                if work is END:
                    last = self.packer.flush()
                    if last is not None:
                        deal(last)
                    return
                detections = None
                if self.planner.should_detect(work.frame.index):
                    started = time.perf_counter()
                    detections = self.detector.predict([work.frame.image], threshold)[0]
                    detect_stats.record(time.perf_counter() - started)
                    self.detector_runs += 1
                started = time.perf_counter()
                work.request = self.planner.plan(detections)
                track_stats.record(time.perf_counter() - started)
                for chunk in self.packer.add(work, len(work.request.boxes)):
                    deal(chunk)
        finally:
            for queue in self.to_pose:
                queue.put(END, force=True)

    def _pose_loop(self, slot: int) -> None:
        stats = self.stats["pose"]
        inbox, outbox = self.to_pose[slot], self.posed[slot]
        try:
            while True:
                chunk = inbox.get()
                if chunk is END:
                    return
                started = time.perf_counter()
                poses = self.keypoint_model.predict_many(
                    [piece.item.frame.image for piece in chunk.pieces],
                    [piece.item.request.boxes[piece.start:piece.stop] for piece in chunk.pieces])
                # Per frame finished here, so the stage's ms stay per frame whatever the packing.
                stats.record(time.perf_counter() - started, chunk.frames_completed)
                outbox.put(_PosedChunk(chunk, poses))
        finally:
            outbox.put(END, force=True)

    def _sink_loop(self) -> None:
        try:
            turn = 0
            while True:
                posed = self.posed[turn].get()
                if posed is END:
                    break
                turn = (turn + 1) % self.pose_workers
                for piece, pose in zip(posed.chunk.pieces, posed.poses):
                    if self.stop_event.is_set():  # a call may hold several frames: stop between them
                        raise Closed
                    piece.item.pose_parts.append(pose)
                    if piece.completes:
                        self._finish_frame(piece.item)
        except Closed:
            raise
        except BaseException as exc:
            if self.error is None:  # before the finishers run, so they abort instead of closing
                self.error, self.error_stage = exc, "sink"
            raise
        finally:
            for finish in self.finishers:
                finish()
            self.finished.set()

    def _finish_frame(self, work: _Work) -> None:
        started = time.perf_counter()
        persons = self.finisher.finish(work.request, _joined(work.pose_parts), work.frame.pts)
        self.persons_posed += len(persons)
        self.track_ids.update(p.track_id for p in persons if p.track_id is not None)
        output = FrameOutput(work.frame, persons, work.request.detected, work.decoded_at)
        for sink in self.sinks:
            sink(output)
        now = time.perf_counter()
        self.stats["sink"].record(now - started)
        self.latency.add(now - output.decoded_at)
        self.frames_out += 1

    # -- reporting -------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {
            "frames": self.frames_out,
            "detector_frames": self.detector_runs,
            "persons": self.persons_posed,
            "tracks": len(self.track_ids),
            "dropped": self.dropped,
            "reconnects": int(getattr(self.source.stats, "reconnects", 0)),
            "stages": [stats.summary() for stats in self.stats.values()],
            "pose_workers": self.pose_workers,
            "queue_max_depth": {"decoded": self.decoded.max_depth,
                                "to_pose": max(queue.max_depth for queue in self.to_pose),
                                "posed": max(queue.max_depth for queue in self.posed)},
            "latency": self.latency.summary(),
            "decode_error": self.source.decode_error,
        }


def persons_to_json(persons: list[Person]) -> list[dict]:
    return [
        {
            "track_id": person.track_id,
            "bbox": [round(float(v), 2) for v in person.bbox],
            "det_score": round(person.det_score, 5),
            "keypoints": np.round(person.keypoints.astype(np.float64), 3).tolist(),
            "kpt_score": round(person.kpt_score, 5),
        }
        for person in persons
    ]
