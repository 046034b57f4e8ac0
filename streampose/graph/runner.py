"""The threaded producer–consumer graph: decode → detect → track+pose → render+sinks.

Each stage is a thread joined to the next by a bounded :class:`StageQueue`. Files apply
backpressure (every frame is processed); live sources drop the oldest decoded frame when the rest
of the graph falls behind, and count it. The first exception in any stage stops every stage and is
re-raised by :meth:`StreamGraph.run`; end of input flows through as a marker so sinks flush.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streampose.graph.persons import Person, PoseRequest, SourcePersons
from streampose.graph.queues import Closed, StageQueue
from streampose.graph.stats import LatencyTracker, StageStats
from streampose.models.detector import Detections, Detector
from streampose.models.keypoints import KeypointModel
from streampose.sources.base import Frame, FrameSource
from streampose.tracking import TrackerConfig

END = object()  # end-of-input marker, passed through every queue


@dataclass(frozen=True)
class StreamSettings:
    """Plain, picklable settings of one streaming run."""

    det_interval: int = 3
    det_threshold: float | None = None
    smooth: bool = False
    queue_size: int = 4
    det_batch: int = 4  # detector frames batched in one call when several are ready
    # Frames whose crops share one pose call when several are ready. 1: on a CPU a pose call's
    # cost is linear in crops, so batching frames gains nothing and only adds batch sizes
    # (each a model compile on OpenVINO) and latency; a GPU may want more.
    pose_batch_frames: int = 1
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
    detections: Detections | None = None


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
        self.persons = SourcePersons(settings.det_interval, settings.smooth, settings.tracker)
        self.stop_event = threading.Event()
        live = bool(source.is_live)
        size = settings.queue_size
        # Live: only the decoder's queue may hold a backlog (it drops the oldest); later queues
        # and batches stay minimal, so a frame waits behind as few others as possible.
        inner = min(size, 1) if live else size
        self.det_batch = 1 if live else settings.det_batch
        self.pose_batch_frames = 1 if live else settings.pose_batch_frames
        # A live backlog is stale frames: keep two, so a frame waits behind at most one other.
        self.decoded: StageQueue[_Work] = StageQueue(min(size, 2) if live else size, self.stop_event,
                                                     drop_oldest=live)
        self.detected: StageQueue[_Work] = StageQueue(inner, self.stop_event)
        self.posed: StageQueue[FrameOutput] = StageQueue(inner, self.stop_event)
        self.stats = {name: StageStats(name) for name in ("decode", "detect", "pose", "sink")}
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
        for name, target in (("decode", self._decode_loop), ("detect", self._detect_loop),
                             ("pose", self._pose_loop), ("sink", self._sink_loop)):
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

    def _detect_loop(self) -> None:
        stats = self.stats["detect"]
        threshold = self.settings.det_threshold
        while True:
            first = self.decoded.get()
            batch = [first] if first is not END else []
            ended = first is END
            if not ended:
                for item in self.decoded.get_ready(self.det_batch - 1):
                    if item is END:
                        ended = True
                        break
                    batch.append(item)
            to_detect = [work for work in batch if self.persons.should_detect(work.frame.index)]
            if to_detect:
                started = time.perf_counter()
                found = self.detector.predict([work.frame.image for work in to_detect], threshold)
                stats.record(time.perf_counter() - started, len(to_detect))
                self.detector_runs += len(to_detect)
                for work, detections in zip(to_detect, found):
                    work.detections = detections
            for work in batch:
                self.detected.put(work)
            if ended:
                self.detected.put(END, force=True)
                return

    def _pose_loop(self) -> None:
        stats = self.stats["pose"]
        while True:
            first = self.detected.get()
            if first is END:
                self.posed.put(END, force=True)
                return
            batch = [first]
            ended = False
            for item in self.detected.get_ready(self.pose_batch_frames - 1):
                if item is END:
                    ended = True
                    break
                batch.append(item)
            started = time.perf_counter()
            requests: list[PoseRequest] = []
            for work in batch:
                # The tracker lost someone on the previous frame: detect this one now, in frame
                # order, so the result never depends on how far ahead the detect stage ran.
                if work.detections is None and self.persons.needs_detection:
                    detect_started = time.perf_counter()
                    work.detections = self.detector.predict([work.frame.image], self.settings.det_threshold)[0]
                    self.stats["detect"].record(time.perf_counter() - detect_started)
                    self.detector_runs += 1
                requests.append(self.persons.plan(work.detections))
            poses = self.keypoint_model.predict_many([work.frame.image for work in batch],
                                                     [request.boxes for request in requests])
            outputs = []
            for work, request, pose in zip(batch, requests, poses):
                persons = self.persons.finish(request, pose, work.frame.pts)
                self.persons_posed += len(persons)
                self.track_ids.update(p.track_id for p in persons if p.track_id is not None)
                outputs.append(FrameOutput(work.frame, persons, request.detected, work.decoded_at))
            stats.record(time.perf_counter() - started, len(batch))
            for output in outputs:
                self.posed.put(output)
            if ended:
                self.posed.put(END, force=True)
                return

    def _sink_loop(self) -> None:
        stats = self.stats["sink"]
        try:
            while True:
                output = self.posed.get()
                if output is END:
                    break
                started = time.perf_counter()
                for sink in self.sinks:
                    sink(output)
                now = time.perf_counter()
                stats.record(now - started)
                self.latency.add(now - output.decoded_at)
                self.frames_out += 1
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
            "queue_max_depth": {"decoded": self.decoded.max_depth, "detected": self.detected.max_depth,
                                "posed": self.posed.max_depth},
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
