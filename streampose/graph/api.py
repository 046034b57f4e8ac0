"""Build and run a streaming graph: for the ``run`` command and for ``Pipeline.stream``."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streampose.errors import InputError
from streampose.graph.runner import (
    END, FrameOutput, StreamGraph, StreamSettings, persons_to_json, pose_workers_for, prepare_for_live)
from streampose.graph.stats import StageStats
from streampose.results import KptResult
from streampose.sources import names_live_source, open_source
from streampose.sources.base import FrameSource


class StreamResult(KptResult):
    """One frame's persons: PaddleX's result keys plus ``frame_index``, ``time`` and ``track_id``."""


def frame_result(output: FrameOutput) -> StreamResult:
    frame = output.frame
    return StreamResult({
        "input_path": frame.source_id,
        "frame_index": frame.index,
        "time": frame.pts,
        "input_img": frame.image,
        "boxes": [
            {
                "track_id": person.track_id,
                "coordinate": [float(value) for value in person.bbox],
                "det_score": person.det_score,
                "keypoints": person.keypoints,
                "kpt_score": person.kpt_score,
            }
            for person in output.persons
        ],
    })


def frame_record(output: FrameOutput) -> dict:
    """One JSON Lines record."""
    return {
        "source": output.frame.source_id,
        "frame": output.frame.index,
        "time": None if output.frame.pts is None else round(output.frame.pts, 6),
        "persons": persons_to_json(output.persons),
    }


def _as_source(source: Any, **options: Any) -> FrameSource:
    return source if isinstance(source, FrameSource) else open_source(source, **options)


def _open_prepared(pipeline: Any, source: Any, settings: StreamSettings, **options: Any) -> FrameSource:
    """The source, opened; a camera or stream only once the models are prepared for it, so it
    does not stream into a buffer while shapes compile (its first frames would come stale)."""
    if not isinstance(source, FrameSource) and names_live_source(source):
        prepare_for_live(pipeline.detector, pipeline.keypoint_model,
                         pose_workers_for(settings, pipeline.keypoint_model))
    return _as_source(source, **options)


def stream_results(pipeline: Any, source: Any, *, det_interval: int = 3, smooth: bool = False,
                   det_threshold: float | None = None, queue_size: int = 4,
                   **source_options: Any) -> Iterator[StreamResult]:
    """Yield a :class:`StreamResult` per frame; closing the generator stops the graph."""
    settings = StreamSettings(det_interval=det_interval, smooth=smooth, queue_size=queue_size,
                              det_threshold=det_threshold if det_threshold is not None else pipeline.det_threshold)
    frame_source = _open_prepared(pipeline, source, settings, **source_options)
    results: queue.Queue = queue.Queue(maxsize=max(2, queue_size))
    stop = threading.Event()

    def deliver(output: FrameOutput) -> None:
        item = frame_result(output)
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    graph = StreamGraph(frame_source, pipeline.detector, pipeline.keypoint_model, settings, [deliver],
                        finishers=[lambda: results.put(END)])
    graph.start()
    try:
        while True:
            try:
                item = results.get(timeout=0.2)
            except queue.Empty:
                if graph.error is not None:
                    break
                continue
            if item is END:
                break
            yield item
    finally:
        stop.set()
        graph.stop()
        graph.wait(30.0)
        frame_source.close()
    if graph.error is not None:
        raise graph.error


@dataclass
class RunOutputs:
    output: Path | None = None
    json_path: str | None = None
    show: bool = False
    hud: bool = True
    preset: str | None = None  # x264 preset (None: the writer's default, veryfast)
    codec: str = "auto"  # the writer's codec ("auto": libx264, else mpeg4), e.g. "h264_nvenc"


def build_sinks(graph_holder: dict, source: FrameSource, outputs: RunOutputs, draw_for_others: bool = False):
    """Sinks (render, encode, JSON Lines, window) and their finishers, opened before the run,
    with the render and encode timings of the sink stage."""
    from streampose.render import SkeletonAnnotator, draw_hud  # noqa: PLC0415
    from streampose.sinks.jsonl import JsonLinesWriter  # noqa: PLC0415
    from streampose.sinks.screen import ScreenWindow  # noqa: PLC0415
    from streampose.sinks.video import VideoWriter  # noqa: PLC0415

    window = ScreenWindow("streampose") if outputs.show else None  # fails early without a display
    writers: dict[str, Any] = {}
    if outputs.json_path:
        writers["json"] = JsonLinesWriter(outputs.json_path)
    annotator = SkeletonAnnotator()
    needs_image = outputs.output is not None or window is not None or draw_for_others
    fps_clock = {"last": time.perf_counter(), "fps": 0.0}
    # The sink stage's two costs, reported on their own: drawing, and colour conversion + encoding.
    parts = {"render": StageStats("render"), "encode": StageStats("encode")}

    def sink(output: FrameOutput) -> None:
        if "json" in writers:
            writers["json"].write(frame_record(output))
        if not needs_image:
            return
        image = output.frame.image
        started = time.perf_counter()
        annotator.annotate(image, output.persons)
        if outputs.hud:
            now = time.perf_counter()
            elapsed = now - fps_clock["last"]
            fps_clock["last"] = now
            fps_clock["fps"] = 0.9 * fps_clock["fps"] + 0.1 * (1.0 / elapsed if elapsed > 0 else 0.0)
            graph = graph_holder.get("graph")
            drops = graph.dropped if graph is not None else 0
            draw_hud(image, [f"{fps_clock['fps']:.1f} fps", f"{len(output.persons)} persons",
                             f"frame {output.frame.index}" + (f"  drops {drops}" if drops else "")])
        drawn = time.perf_counter()
        parts["render"].record(drawn - started)
        if outputs.output is not None:
            if "video" not in writers:
                height, width = image.shape[:2]
                rate = source.stream_info.rate or source.fps or 25
                writers["video"] = VideoWriter(outputs.output, rate, (width, height), codec=outputs.codec,
                                                 preset=outputs.preset)
            writers["video"].write(image, output.frame.pts)
            parts["encode"].record(time.perf_counter() - drawn)
        if window is not None and not window.show(image):
            graph = graph_holder.get("graph")
            if graph is not None:
                graph.request_finish()

    def finish(failed: bool) -> None:
        for writer in writers.values():
            if failed:
                writer.abort()
            else:
                writer.close()
        if window is not None:
            window.close()

    return sink, finish, writers, parts


def run_stream(pipeline: Any, source_spec: Any, settings: StreamSettings, outputs: RunOutputs,
               *, progress: bool = True, source_options: dict | None = None,
               extra_sinks: list | None = None, extra_sinks_see_drawing: bool = True) -> dict:
    """Run one source to its sinks with a progress display; returns the summary dict.

    ``extra_sinks`` get every frame after the outputs, drawn on unless ``extra_sinks_see_drawing``
    is False (a sink that only reads persons then costs no rendering).

    Outputs are finished (renamed into place) when the input ends, is interrupted, or is
    truncated; a failure inside the graph aborts them so nothing half-written looks complete.
    """
    source = _open_prepared(pipeline, source_spec, settings, **(source_options or {}))
    holder: dict = {}
    extra_sinks = list(extra_sinks or [])
    sink, finish, writers, sink_parts = build_sinks(holder, source, outputs,
                                                    draw_for_others=bool(extra_sinks) and extra_sinks_see_drawing)
    state = {"failed": False}
    graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [sink, *extra_sinks],
                        finishers=[lambda: finish(state["failed"] or graph.error is not None)])
    holder["graph"] = graph
    started = time.perf_counter()
    display = _progress_display(graph, source) if progress else None
    interrupted = False
    try:
        if display is not None:
            display.start()
        graph.run()
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        state["failed"] = True
        raise
    finally:
        if display is not None:
            display.stop()
        source.close()
    summary = graph.summary()
    # Parts of the sink stage (its ms include them), listed only when the run drew or encoded.
    summary["stages"] += [part.summary() for part in sink_parts.values() if part.items]
    summary["seconds"] = time.perf_counter() - started
    summary["fps"] = summary["frames"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
    summary["interrupted"] = interrupted
    summary["source"] = source.source_id
    summary["output"] = str(outputs.output) if outputs.output and "video" in writers else None
    return summary


class _progress_display:  # noqa: N801 - used like a function
    """A rich progress bar for files (frames, fps, ETA), a status line for live sources."""

    def __init__(self, graph: StreamGraph, source: FrameSource) -> None:
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import (  # noqa: PLC0415
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self.graph = graph
        self.console = Console(stderr=True)
        total = None if source.is_live else source.frame_count
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
        if total:
            columns.append(TimeRemainingColumn())
        self.progress = Progress(*columns, console=self.console, transient=False,
                                 disable=not self.console.is_terminal)
        label = Path(str(source.source_id)).name if not source.is_live else source.source_id
        self.task = self.progress.add_task(label[:40], total=total, rate="")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._update, daemon=True, name="streampose-progress")
        self._started = time.perf_counter()

    def start(self) -> None:
        self.progress.start()
        self._thread.start()

    def _update(self) -> None:
        while not self._stop.wait(0.25):
            self._refresh()

    def _refresh(self) -> None:
        frames = self.graph.frames_out
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rate = f"{frames / elapsed:5.1f} fps"
        if self.graph.dropped:
            rate += f" · {self.graph.dropped} dropped"
        self.progress.update(self.task, completed=frames, rate=rate)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._refresh()
        self.progress.stop()


def print_summary(summary: dict, file: Any = None) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console(stderr=True, file=file or sys.stderr)
    table = Table(title=f"streampose: {summary['source']}", show_header=True)
    for column in ("stage", "items", "fps", "mean ms", "p95 ms"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage in summary["stages"]:
        table.add_row(stage["stage"], str(stage["items"]), f"{stage['fps']:.1f}",
                      f"{stage['mean_ms']:.2f}", f"{stage['p95_ms']:.2f}")
    console.print(table)
    latency = summary["latency"]
    console.print(
        f"frames {summary['frames']} in {summary['seconds']:.1f} s ({summary['fps']:.1f} fps) · "
        f"detector on {summary['detector_frames']} · persons {summary['persons']} · tracks {summary['tracks']} · "
        f"dropped {summary['dropped']} · reconnects {summary['reconnects']} · "
        f"latency p50 {latency['p50_ms']:.0f} ms p95 {latency['p95_ms']:.0f} ms"
        + (f" · output {summary['output']}" if summary.get("output") else ""))


def check_source_ended_cleanly(summary: dict) -> None:
    if summary.get("decode_error"):
        raise InputError(f"source {summary['source']}: {summary['decode_error']} "
                         f"(processed {summary['frames']} frames; output kept)")
