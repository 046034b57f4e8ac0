"""``streampose bench``: speed figures as ratios taken in one run, on the same machine.

For each video it runs (1) the streaming graph end to end (decode → H.264 file), (2) a naive
sequential baseline in one thread (detector every frame, one pose call per person, same backend),
and (3) the real PaddleX pipeline frame by frame when ``paddlex`` is importable. The first video
runs the graph twice: cold (a fresh process: model compiles per batch size included) and warm
(the rate a camera or a folder of videos settles at). It also measures the cost of one more
person in a batched pose call. Results print as a rich table and as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class BenchSettings:
    videos: list[str]
    backend: str | None = None
    det_interval: int = 3
    max_frames: int | None = None
    baseline_frames: int = 120
    paddlex_frames: int = 60
    pipeline: str = "human_keypoint_detection"
    json_path: str | None = None
    make_variants: bool = True
    live_fps: float | None = 25.0
    # PaddleX's own per-frame output on the first video ({"frames": [{"persons": [{"bbox"}]}]}),
    # e.g. ../shared/data/paddlex_reference/vtest.avi.json: persons per frame, recall, precision.
    reference: str | None = None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_variant(source: Path, target: Path, size: tuple[int, int], tile: bool, max_frames: int | None) -> Path:
    """A larger copy of ``source``: upscaled (720p) or tiled 2x2 then scaled (1080p crowd)."""
    import av  # noqa: PLC0415
    import cv2  # noqa: PLC0415

    from streampose.sinks.video import VideoWriter  # noqa: PLC0415

    if target.exists():
        return target
    width, height = size
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or 25
        writer = VideoWriter(target, rate, (width, height), preset="ultrafast", crf=18)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if max_frames is not None and index >= max_frames:
                    break
                image = frame.to_ndarray(format="bgr24")
                if tile:
                    image = np.vstack([np.hstack([image, image[:, ::-1]]), np.hstack([image[:, ::-1], image])])
                writer.write(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return target


def run_graph(pipeline: Any, video: str, det_interval: int, output: Path,
              boxes_per_frame: list[np.ndarray] | None = None) -> dict:
    """One end-to-end run; each frame's person boxes go to ``boxes_per_frame`` when given."""
    from streampose.graph.api import RunOutputs, run_stream  # noqa: PLC0415
    from streampose.graph.runner import StreamSettings  # noqa: PLC0415

    settings = StreamSettings(det_interval=det_interval, det_threshold=pipeline.det_threshold)
    extra = []
    if boxes_per_frame is not None:
        extra.append(lambda out: boxes_per_frame.append(np.array([p.bbox for p in out.persons]).reshape(-1, 4)))
    cpu_before = cpu_seconds()
    summary = run_stream(pipeline, video, settings, RunOutputs(output, None, False, True), progress=False,
                         extra_sinks=extra)
    summary["cpu_percent"] = 100.0 * (cpu_seconds() - cpu_before) / max(summary["seconds"], 1e-9)
    summary["persons_per_frame"] = summary["persons"] / max(summary["frames"], 1)
    return summary


def compare_with_reference(boxes_per_frame: list[np.ndarray], reference_path: str | Path,
                           iou_threshold: float = 0.5) -> dict:
    """Persons found against PaddleX's frame-by-frame output on the same video.

    A person counts as found when one of ours overlaps it at IoU >= ``iou_threshold``, paired
    one-to-one as the tracker pairs tracks with detections (:func:`streampose.tracking.associate`).
    Recall: share of PaddleX's persons found; precision: share of ours PaddleX has.
    """
    from streampose.tracking import associate  # noqa: PLC0415

    with open(reference_path, encoding="utf-8") as handle:
        frames = json.load(handle)["frames"]
    count = min(len(frames), len(boxes_per_frame))
    theirs_total = ours_total = matched = 0
    for reference, ours in zip(frames[:count], boxes_per_frame[:count]):
        theirs = np.array([person["bbox"] for person in reference["persons"]], np.float64).reshape(-1, 4)
        theirs_total += len(theirs)
        ours_total += len(ours)
        matched += len(associate(theirs, ours, iou_threshold)[0])
    return {
        "reference": str(reference_path), "frames": count,
        "persons_per_frame": ours_total / max(count, 1),
        "reference_persons_per_frame": theirs_total / max(count, 1),
        "ratio": ours_total / max(theirs_total, 1),
        "recall": matched / max(theirs_total, 1), "precision": matched / max(ours_total, 1),
    }


def paced(frames: Iterable[T], fps: float) -> Iterator[T]:
    """``frames`` no faster than ``fps``, on a fixed clock: a late frame does not delay the next."""
    period = 1.0 / fps
    started = time.perf_counter()
    for count, frame in enumerate(frames):
        delay = started + count * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield frame


class PacedFileSource:
    """A video file played at a fixed rate and marked live: a camera stand-in with people in it.

    The graph then applies its live policy (drop the oldest decoded frame when behind), so the
    decode-to-render latency and the drops are what a camera at that rate would see.
    """

    def __new__(cls, path: str, fps: float):
        from streampose.sources.video import VideoFileSource  # noqa: PLC0415

        class _Paced(VideoFileSource):
            is_live = True

            def _frames(self):
                return paced(super()._frames(), fps)

        return _Paced(path)


def run_live(pipeline: Any, video: str, fps: float, det_interval: int) -> dict:
    """p50/p95 decode-to-render latency and drops with the video paced like a live camera."""
    from streampose.graph.api import RunOutputs, run_stream  # noqa: PLC0415
    from streampose.graph.runner import StreamSettings  # noqa: PLC0415

    settings = StreamSettings(det_interval=det_interval, det_threshold=pipeline.det_threshold)
    with tempfile.TemporaryDirectory() as folder:
        summary = run_stream(pipeline, PacedFileSource(video, fps), settings,
                             RunOutputs(Path(folder) / "live.mp4", None, False, True), progress=False)
    return {"source_fps": fps, "frames": summary["frames"], "dropped": summary["dropped"],
            "latency": summary["latency"], "queue_max_depth": summary["queue_max_depth"]}


def run_naive(pipeline: Any, video: str, frames: int, output: Path) -> dict:
    """Decode → detect every frame → pose one crop per call → render → encode, one thread.

    Timed, like PaddleX, on ``frames`` frames spread over the whole video after a few untimed
    ones (:func:`spread_frame_plan`): one pose call per person makes its rate follow the crowd,
    and vtest.avi's first frames hold fewer persons than the rest, which made the baseline look
    faster than it is. Each timed frame's clock includes decoding it; frames outside the plan are
    decoded (a video cannot be skipped through) but neither timed nor processed. x264 spends a
    little more on frames that far apart (vtest.avi: +1.6 ms of CPU a frame, ~2 % of a naive
    frame), a bias this baseline accepts for timing the video's real crowds.
    """
    import av  # noqa: PLC0415

    from streampose.render import SkeletonAnnotator  # noqa: PLC0415
    from streampose.sinks.video import VideoWriter  # noqa: PLC0415

    annotator = SkeletonAnnotator()
    persons = count = 0
    seconds = 0.0
    with av.open(video) as container:
        rate = container.streams.video[0].average_rate or 25
        writer = None
        for frame, is_timed, decode_seconds in planned_frames(container, frames):
            started = time.perf_counter() - decode_seconds
            image = frame.to_ndarray(format="bgr24")
            found = pipeline.detector.predict([image], pipeline.det_threshold)[0]
            drawn = []
            for box in found.boxes:
                pose = pipeline.keypoint_model.predict(image, box[None])
                drawn.append(_Drawn(box, pose.keypoints[0]))
            annotator.annotate(image, drawn)
            if writer is None:
                writer = VideoWriter(output, rate, (image.shape[1], image.shape[0]))
            writer.write(image)
            if is_timed:
                seconds += time.perf_counter() - started
                persons += len(drawn)
                count += 1
        if writer is not None:
            writer.close()
    return baseline_figures(count, seconds, persons)


@dataclass
class _Drawn:
    bbox: np.ndarray
    keypoints: np.ndarray
    track_id: int | None = None
    det_score: float = 0.0


# Frames PaddleX and the naive loop run before their clocks start, so the ratios are taken
# against their steady rates.
WARMUP_FRAMES = 3


def run_paddlex(video: str, frames: int, model_home: Path) -> dict | None:
    """The real PaddleX pipeline frame by frame, when paddlex is importable: ``frames`` frames
    spread over the whole video (:func:`spread_frame_plan`), timed per call after
    :data:`WARMUP_FRAMES` untimed ones."""
    try:
        from paddlex import create_pipeline as paddlex_pipeline  # noqa: PLC0415
    except ImportError:
        return None
    import shutil  # noqa: PLC0415

    import av  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="streampose-paddlex-"))
    detector = work / "detector"
    shutil.copytree(model_home / "PicoDet-S_pedestrian_320", detector)
    config_path = detector / "inference.yml"
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("Global", {})["model_name"] = "PicoDet-S"  # PaddleX checks the name
    config_path.write_text(yaml.safe_dump(config))
    pipeline = paddlex_pipeline(config={
        "pipeline_name": "human_keypoint_detection",
        "SubModules": {
            "ObjectDetection": {"module_name": "object_detection", "model_name": "PicoDet-S",
                                "model_dir": str(detector), "batch_size": 1, "threshold": 0.5},
            "KeypointDetection": {"module_name": "keypoint_detection", "model_name": "PP-TinyPose_128x96",
                                  "model_dir": str(model_home / "PP-TinyPose_128x96"), "batch_size": 1,
                                  "flip": False, "use_udp": None},
        },
    }, device="cpu")
    persons = count = 0
    seconds = 0.0
    with av.open(video) as container:
        total = int(container.streams.video[0].frames or 0)  # 0: the container does not say
        for frame, is_timed, _ in planned_frames(container, frames):
            started = time.perf_counter()
            results = list(pipeline.predict(frame.to_ndarray(format="bgr24")))
            if is_timed:
                seconds += time.perf_counter() - started
                persons += sum(len(result["boxes"]) for result in results)
                count += 1
    shutil.rmtree(work, ignore_errors=True)
    return {**baseline_figures(count, seconds, persons), "spread_over_frames": total or None}


def spread_frame_plan(total: int, frames: int) -> tuple[set[int], set[int]]:
    """Which frames a frame-by-frame baseline runs untimed (its first few) and which it is timed on.

    PaddleX and the naive loop pose one person per call, so their rate depends on the crowd: the
    timed frames are spread evenly over the whole video, so they hold the same crowds as the run
    they are compared with (vtest.avi: 5.6 persons per frame over the video, 4.1 in its first 60
    frames, which made PaddleX look ~20% faster than it is there). With the length unknown, the
    first frames.
    """
    warmup = set(range(WARMUP_FRAMES))
    if total <= WARMUP_FRAMES + frames:
        return warmup, set(range(WARMUP_FRAMES, WARMUP_FRAMES + frames))
    span = total - WARMUP_FRAMES
    return warmup, {WARMUP_FRAMES + (position * span) // frames for position in range(frames)}


def planned_frames(container: Any, frames: int) -> Iterator[tuple[Any, bool, float]]:
    """The frames a frame-by-frame baseline runs (:func:`spread_frame_plan`), in order, each with
    whether it is timed and the seconds its own decode took. Frames outside the plan are decoded
    (a video cannot be skipped through) and passed over; decoding stops after the last planned one.
    """
    stream = container.streams.video[0]
    warmup, timed = spread_frame_plan(int(stream.frames or 0), frames)
    decoded = container.decode(stream)
    for index in range(max(timed) + 1):
        started = time.perf_counter()
        frame = next(decoded, None)
        if frame is None:
            return
        if index in warmup or index in timed:
            yield frame, index in timed, time.perf_counter() - started


def baseline_figures(frames: int, seconds: float, persons: int) -> dict:
    """A baseline's report: its timed frames, their time, rate and crowd."""
    return {"frames": frames, "warmup_frames": WARMUP_FRAMES, "seconds": seconds,
            "fps": frames / seconds if seconds > 0 else 0.0, "persons_per_frame": persons / max(frames, 1)}


def pose_cost_per_person(pipeline: Any, video: str) -> dict:
    """ms for one pose call with 1 and with 8 crops, and the cost of each extra person.

    Measured as the graph runs it: with as many callers at once as it has pose workers (the
    model's streams), so the figure is wall time per call at full throughput; ``*_one_caller``
    is the latency of a single call on an otherwise idle model.
    """
    import av  # noqa: PLC0415

    with av.open(video) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    height, width = image.shape[:2]
    boxes = np.array([[width * 0.3, height * 0.2, width * 0.4, height * 0.6]] * 8, np.float32)
    boxes[:, [0, 2]] += np.arange(8)[:, None] * width * 0.05
    model = pipeline.keypoint_model
    workers = model.streams
    calls = 15
    one_caller, throughput = {}, {}
    for count in (1, 8):
        for _ in range(3):  # warm-up, and let a static model for this batch size compile
            model.predict(image, boxes[:count])
            time.sleep(1.0)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            model.predict(image, boxes[:count])
            samples.append(time.perf_counter() - started)
        one_caller[count] = float(np.median(samples)) * 1000.0
        threads = [threading.Thread(target=lambda n=count: [model.predict(image, boxes[:n]) for _ in range(calls)])
                   for _ in range(workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        throughput[count] = (time.perf_counter() - started) * 1000.0 / (calls * workers)
    return {"workers": workers, "pose_ms_1": throughput[1], "pose_ms_8": throughput[8],
            "ms_per_extra_person": (throughput[8] - throughput[1]) / 7,
            "pose_ms_1_one_caller": one_caller[1], "pose_ms_8_one_caller": one_caller[8],
            "ms_per_extra_person_one_caller": (one_caller[8] - one_caller[1]) / 7}


def run_bench(settings: BenchSettings) -> dict:
    from streampose.models.registry import model_home  # noqa: PLC0415
    from streampose.pipeline import create_pipeline  # noqa: PLC0415

    pipeline = create_pipeline(settings.pipeline, backend=settings.backend)
    work = Path(tempfile.mkdtemp(prefix="streampose-bench-"))
    videos = [Path(video) for video in settings.videos]
    if settings.make_variants and videos:
        base = videos[0]
        videos.append(make_variant(base, work / f"{base.stem}_720p.mp4", (1280, 720), False, settings.max_frames or 300))
        videos.append(make_variant(base, work / f"{base.stem}_1080p_crowd.mp4", (1920, 1080), True,
                                   settings.max_frames or 300))
    report: dict[str, Any] = {"backend": pipeline.backend, "det_interval": settings.det_interval,
                              "cpu_count": os.cpu_count(), "precision": model_precisions(pipeline), "videos": []}
    for position, video in enumerate(videos):
        entry: dict[str, Any] = {"video": video.name}
        boxes: list[np.ndarray] | None = [] if settings.reference and position == 0 else None
        entry["graph"] = run_graph(pipeline, str(video), settings.det_interval, work / f"{video.stem}_out.mp4",
                                   boxes)
        if boxes is not None:
            report["reference"] = {"video": video.name, **compare_with_reference(boxes, settings.reference)}
        if position == 0:
            # Once more in the same process: OpenVINO has compiled a static model per batch size
            # met and the allocators have their working set. This is the rate a camera or a
            # folder of videos settles at; the first run includes that warm-up.
            entry["graph_warm"] = run_graph(pipeline, str(video), settings.det_interval,
                                            work / f"{video.stem}_warm.mp4")
        entry["naive"] = run_naive(pipeline, str(video), settings.baseline_frames, work / f"{video.stem}_naive.mp4")
        home = model_home()
        paddlex = run_paddlex(str(video), settings.paddlex_frames, home) if home else None
        if paddlex is not None:
            entry["paddlex"] = paddlex
        entry["speedup_vs_naive"] = entry["graph"]["fps"] / entry["naive"]["fps"]
        if paddlex:
            entry["speedup_vs_paddlex"] = entry["graph"]["fps"] / paddlex["fps"]
        report["videos"].append(entry)
    report["pose_cost"] = pose_cost_per_person(pipeline, str(videos[0]))
    if settings.live_fps:
        report["live"] = run_live(pipeline, str(videos[0]), settings.live_fps, settings.det_interval)
    report["peak_rss_mb"] = peak_rss_mb()
    return report


STAGE_COLUMNS = ("decode", "detect", "track", "pose", "sink", "render", "encode")


def model_precisions(pipeline) -> dict[str, str]:
    """What each model really runs in; for ``auto``, how it was decided (timed or remembered)."""
    found = {}
    for role, session in (("detector", pipeline.detector.session), ("pose", pipeline.keypoint_model.session)):
        precision = getattr(session, "precision", "f32")
        choice = getattr(session, "precision_choice", None)
        found[role] = f"{precision} (auto, {choice.how})" if choice is not None else precision
    return found


def print_report(report: dict) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console(stderr=True, width=max(Console(stderr=True).width, 210))
    workers = report["videos"][0]["graph"].get("pose_workers", 1) if report["videos"] else 1
    table = Table(title=f"streampose bench · backend {report['backend']} · det-interval {report['det_interval']} · "
                        f"detector {report['precision']['detector']}, pose {report['precision']['pose']} · "
                        f"{workers} pose workers (stage ms: per frame in each worker, detect per detector run; "
                        f"render and encode are the sink's parts)")
    for column in ("video", "fps", "warm fps", "naive fps", "PaddleX fps", "× naive", "× PaddleX", "persons/frame",
                   *STAGE_COLUMNS, "p50 ms", "p95 ms", "CPU %"):
        table.add_column(column, justify="right")
    for entry in report["videos"]:
        graph = entry["graph"]
        stages = {stage["stage"]: stage for stage in graph["stages"]}
        paddlex = entry.get("paddlex")
        table.add_row(
            entry["video"], f"{graph['fps']:.1f}",
            f"{entry['graph_warm']['fps']:.1f}" if "graph_warm" in entry else "-", f"{entry['naive']['fps']:.1f}",
            f"{paddlex['fps']:.1f}" if paddlex else "-", f"{entry['speedup_vs_naive']:.1f}",
            f"{entry['speedup_vs_paddlex']:.1f}" if paddlex else "-", f"{graph['persons_per_frame']:.2f}",
            *(f"{stages[name]['mean_ms']:.1f}" if name in stages else "-" for name in STAGE_COLUMNS),
            f"{graph['latency']['p50_ms']:.0f}", f"{graph['latency']['p95_ms']:.0f}", f"{graph['cpu_percent']:.0f}")
    console.print(table)
    cost = report["pose_cost"]
    reference = report.get("reference")
    if reference:
        console.print(f"vs PaddleX's own output on {reference['video']} ({reference['frames']} frames): "
                      f"persons/frame {reference['persons_per_frame']:.2f} vs {reference['reference_persons_per_frame']:.2f} "
                      f"(ratio {reference['ratio']:.3f}), recall {reference['recall']:.3f}, "
                      f"precision {reference['precision']:.3f} at IoU 0.5")
    live = report.get("live")
    if live:
        console.print(f"live ({live['source_fps']:g} fps paced): {live['frames']} frames, {live['dropped']} dropped, "
                      f"latency p50 {live['latency']['p50_ms']:.0f} ms p95 {live['latency']['p95_ms']:.0f} ms, "
                      f"queue depths {live['queue_max_depth']}")
    console.print(f"pose with {cost['workers']} worker(s): {cost['pose_ms_1']:.2f} ms for 1 person, "
                  f"{cost['pose_ms_8']:.2f} ms for 8 → {cost['ms_per_extra_person']:.2f} ms per extra person "
                  f"(one caller alone: {cost['ms_per_extra_person_one_caller']:.2f}) · "
                  f"peak RSS {report['peak_rss_mb']:.0f} MB")


def write_report(report: dict, json_path: str | None) -> None:
    """The report as JSON: into ``json_path``, else on stdout (the tables went to stderr)."""
    text = json.dumps(report, indent=2, default=str)
    if json_path:
        Path(json_path).write_text(text, encoding="utf-8")
    else:
        print(text, file=sys.stdout)


def main(settings: BenchSettings) -> int:
    report = run_bench(settings)
    print_report(report)
    write_report(report, settings.json_path)
    return 0
