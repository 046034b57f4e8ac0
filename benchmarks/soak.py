"""Soak run: the streaming graph on a looped video for a long time, watching memory and handles.

Why: a camera on a headless box runs for days. A leak of a few kilobytes per frame (a tracker
that never forgets, a runtime that caches one compiled shape per call, a frame kept alive by a
stats list, an encoder that never frees its packets) is invisible in a 795-frame test and fatal
after a week. This script feeds the real graph (decode → detect → track → pose → render →
encode) with a video that never ends, samples the process's resident memory (``VmRSS`` from
``/proc/self/status``), threads and open file descriptors every ``--sample-s`` seconds, and
reports the growth after warm-up. It is a script, not a test: it takes as long as you ask.

The output is real work too, so the encoder and the file system are part of what is soaked:
each pass over the video is rendered and encoded into its own file (H.264 by default, or JSON
Lines, or nothing with ``--sink null``), and only the newest ``--keep`` files are kept, so disk
use stays bounded however long it runs.

Warm-up ends at the later of ``--warmup-s`` seconds and the end of the first pass: by then the
models have run, the encoder is open and the allocator has its working set. Growth is
``(final RSS - RSS after warm-up) / RSS after warm-up``; the target is under 10 %
(``--max-growth``). The least-squares slope of RSS over the second half of the run after warm-up
is printed too, to tell a steady leak (the slope stays up) from a step that settled. Steps are
expected: the OpenVINO backend compiles one static shape per batch size that becomes common (at
most eight per model, the least recently used one evicted), so memory and threads step up when
a crowd size first becomes common, even in the second pass, then stay flat. Exit status: 0
within target, 1 over it, 2 bad input or a decode error, 3 when the run ended before warm-up
did (no growth figure), 130 on Ctrl-C.

Run it (Linux only: it reads ``/proc/self``) from the repository root::

    python benchmarks/soak.py                      # 30 minutes, vtest.avi, H.264 files
    python benchmarks/soak.py --minutes 3          # a quick check
    python benchmarks/soak.py --live-fps 25        # as a 25 fps camera: live queues, drops counted
    python benchmarks/soak.py --backend openvino --det-interval 3 --json /tmp/soak.json
    python benchmarks/soak.py --pipeline human_keypoint_detection --precision f32   # the predict models

For the full 30-minute figure, run it on an otherwise idle machine (other processes change the
frame rate, not the memory figures, but the run then covers fewer frames) and keep the JSON
report with the commit it measured. Models come from ``$STREAMPOSE_MODEL_HOME``, by default
``../shared/models`` beside the repository, like the tests.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streampose import create_pipeline
from streampose.bench import paced
from streampose.config import STREAM_PRESET
from streampose.errors import ConfigError, StreamposeError
from streampose.graph.api import frame_record
from streampose.graph.runner import FrameOutput, StreamGraph, StreamSettings
from streampose.render import SkeletonAnnotator, draw_hud
from streampose.sinks.jsonl import JsonLinesWriter
from streampose.sinks.video import VideoWriter
from streampose.sources.base import Frame, FrameSource, StreamInfo
from streampose.sources.video import VideoFileSource

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_VIDEO = SHARED / "samples" / "vtest.avi"
MODEL_HOME_ENV = "STREAMPOSE_MODEL_HOME"

EXIT_OK = 0
EXIT_GROWTH = 1
EXIT_ERROR = 2
EXIT_INCONCLUSIVE = 3  # the run ended before warm-up did: no growth figure
EXIT_INTERRUPTED = 130
SINK_KINDS = ("video", "jsonl", "null")


# -- the endless source ---------------------------------------------------------------------------
class LoopedVideoSource(FrameSource):
    """A video file played again and again, as one stream whose index and clock never go back.

    Each pass reopens the file (a fresh demuxer and decoder, as a long run would see after a
    reconnect), so the soak also covers opening and closing FFmpeg contexts. ``loop_starts``
    holds the index of the first frame of every pass, so a sink can tell which pass a frame
    belongs to; it is appended to before that frame is yielded.
    """

    is_live = False

    def __init__(self, path: str | os.PathLike[str], live_fps: float | None = None) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))
        # Played as a camera would send it: frames at a fixed rate, and the graph's live policy
        # (drop the oldest when behind, each frame posed alone) instead of every frame in turn.
        self.live_fps = live_fps
        self.is_live = live_fps is not None
        probe = VideoFileSource(self.path)  # fails here, before any model work, on a bad path
        try:
            self._fps = probe.fps
            self._size = probe.size
            self._info = probe.stream_info
        finally:
            probe.close()
        self.loop_starts: list[int] = []
        self._current: VideoFileSource | None = None
        self._current_lock = threading.Lock()

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return None  # endless

    @property
    def size(self) -> tuple[int, int] | None:
        return self._size

    @property
    def stream_info(self) -> StreamInfo:
        return StreamInfo(rate=self._info.rate, codec=self._info.codec)

    @property
    def loops_started(self) -> int:
        return len(self.loop_starts)

    def loop_of(self, index: int) -> int:
        """The pass (0-based) that frame ``index`` came from."""
        return bisect.bisect_right(self.loop_starts, index) - 1

    def _frames(self) -> Iterator[Frame]:
        frames = self._looped_frames()
        return paced(frames, self.live_fps) if self.live_fps else frames

    def _looped_frames(self) -> Iterator[Frame]:
        index = 0
        clock_offset = 0.0
        period = 1.0 / self._fps if self._fps else 0.0
        while not self.stop_requested:
            with self._open_pass() as one_pass:
                first_index = index
                last_pts: float | None = None
                for frame in one_pass:
                    if index == first_index:
                        self.loop_starts.append(index)
                    pts = None if frame.pts is None else clock_offset + frame.pts
                    last_pts = pts
                    self.stats.frames_read += 1
                    yield Frame(self.source_id, index, pts, frame.image)
                    index += 1
                    if self.stop_requested:
                        return
                if one_pass.decode_error:
                    self.decode_error = f"pass {len(self.loop_starts)}: {one_pass.decode_error}"
                    return
            if index == first_index:
                self.decode_error = "a pass over the video yielded no frame"
                return
            clock_offset = (last_pts + period) if last_pts is not None else index * period

    def _open_pass(self) -> VideoFileSource:
        source = VideoFileSource(self.path, source_id=self.source_id)
        with self._current_lock:
            self._current = source
        return source

    def stop(self) -> None:
        super().stop()
        with self._current_lock:
            current = self._current
        if current is not None:
            current.stop()


# -- process probes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessSample:
    """One look at the process: memory, OS threads, open descriptors, progress."""

    elapsed_s: float
    frames: int
    loops_started: int
    rss_kib: int
    threads: int
    open_fds: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024.0


def read_proc_status() -> dict[str, str]:
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError as error:
        raise ConfigError(f"cannot read /proc/self/status ({error.strerror}): the soak runs on Linux only") from None
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def take_sample(elapsed_s: float, frames: int, loops_started: int) -> ProcessSample:
    status = read_proc_status()
    return ProcessSample(
        elapsed_s=round(elapsed_s, 3),
        frames=frames,
        loops_started=loops_started,
        rss_kib=int(status["VmRSS"].split()[0]),
        threads=int(status["Threads"]),
        open_fds=len(os.listdir("/proc/self/fd")) - 1,  # minus the descriptor listdir itself holds
    )


class ProgressView(Protocol):
    def update(self, sample: ProcessSample, fps: float) -> None: ...


class Sampler:
    """Samples every ``interval_s``, and at the deadline takes the final sample and ends the input.

    Ending the input from here (rather than from a separate timer) makes the final sample the
    last look at a graph that is still running at full load, comparable with the warm-up one.
    """

    def __init__(self, graph: StreamGraph, source: LoopedVideoSource, duration_s: float,
                 interval_s: float, view: ProgressView | None) -> None:
        self.graph = graph
        self.source = source
        self.duration_s = duration_s
        self.interval_s = interval_s
        self.view = view
        self.samples: list[ProcessSample] = []
        self.started = 0.0
        self.deadline_reached = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> None:
        """Take the "before start" sample (models loaded, graph not started) and begin ticking."""
        self.started = time.perf_counter()
        self.samples.append(self._sample())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _sample(self) -> ProcessSample:
        return take_sample(time.perf_counter() - self.started, self.graph.frames_out, self.source.loops_started)

    def _loop(self) -> None:
        next_sample = self.interval_s
        while not self._stop.wait(1.0):
            elapsed = time.perf_counter() - self.started
            if elapsed >= self.duration_s:
                self.samples.append(self._sample())
                self.deadline_reached = True
                self.graph.request_finish()
                return
            if elapsed >= next_sample:
                self.samples.append(self._sample())
                next_sample += self.interval_s
            if self.view is not None:
                frames = self.graph.frames_out
                latest = self.samples[-1]
                self.view.update(ProcessSample(elapsed, frames, self.source.loops_started, latest.rss_kib,
                                               latest.threads, latest.open_fds), frames / max(elapsed, 1e-9))


class RichProgress:
    """A time bar on stderr with frames, fps and the latest RSS; silent when not a terminal."""

    def __init__(self, duration_s: float) -> None:
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]soak"), BarColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[status]}"), console=console,
                                 disable=not console.is_terminal)
        self.task = self.progress.add_task("soak", total=duration_s, status="")

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, sample: ProcessSample, fps: float) -> None:
        status = (f"pass {sample.loops_started} · {sample.frames} frames · {fps:.1f} fps · "
                  f"RSS {sample.rss_mib:.0f} MiB")
        self.progress.update(self.task, completed=sample.elapsed_s, status=status)


# -- the output, rotated per pass ----------------------------------------------------------------
class RotatingOutput:
    """The graph's sink: render and write each frame into one file per pass over the video.

    A pass's file is closed (renamed into place by the writer) when the first frame of the next
    pass arrives, and files older than the newest ``keep`` are deleted.
    """

    def __init__(self, kind: str, folder: Path, source: LoopedVideoSource, keep: int = 2) -> None:
        if kind not in SINK_KINDS:
            raise ConfigError(f"--sink {kind}: choose one of {', '.join(SINK_KINDS)}")
        self.kind = kind
        self.folder = folder
        self.source = source
        self.keep = max(1, keep)
        self.annotator = SkeletonAnnotator()
        self.files_finished: list[Path] = []
        self.bytes_written = 0
        self._writer: VideoWriter | JsonLinesWriter | None = None
        self._loop = -1

    def __call__(self, output: FrameOutput) -> None:
        if self.kind == "null":
            return
        loop = self.source.loop_of(output.frame.index)
        if loop != self._loop or self._writer is None:
            self._rotate(loop)
        if isinstance(self._writer, VideoWriter):
            image = output.frame.image
            self.annotator.annotate(image, output.persons)
            draw_hud(image, [f"pass {loop + 1}", f"frame {output.frame.index}", f"{len(output.persons)} persons"])
            self._writer.write(image, output.frame.pts)
        elif self._writer is not None:
            self._writer.write(frame_record(output))

    def _rotate(self, loop: int) -> None:
        self.close()
        self._loop = loop
        if self.kind == "video":
            rate = self.source.stream_info.rate or self.source.fps or 25
            size = self.source.size
            if size is None:
                raise ConfigError(f"video {self.source.path}: its frame size is unknown, cannot encode it")
            self._writer = VideoWriter(self.folder / f"soak-pass{loop + 1:05d}.mp4", rate, size)
        else:
            self._writer = JsonLinesWriter(self.folder / f"soak-pass{loop + 1:05d}.jsonl")

    def close(self, failed: bool = False) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if failed:
            writer.abort()
            return
        writer.close()
        path = writer.path
        if path is not None and path.exists():
            self.bytes_written += path.stat().st_size
            self.files_finished.append(path)
        while len(self.files_finished) > self.keep:
            self.files_finished.pop(0).unlink(missing_ok=True)


# -- the report -----------------------------------------------------------------------------------
@dataclass
class SoakReport:
    video: str
    backend: str
    precision: str
    det_interval: int
    sink: str
    live_fps: float | None
    duration_s: float
    frames: int
    passes: int
    fps: float
    warmup_end_s: float | None
    rss_warm_mib: float | None
    rss_final_mib: float
    rss_max_mib: float
    rss_growth_pct: float | None
    rss_late_slope_mib_per_h: float | None
    max_growth_pct: float
    threads: dict[str, int]
    open_fds: dict[str, int]
    dropped: int
    latency_ms: dict[str, float]
    queue_max_depth: dict[str, int]
    decode_error: str | None
    interrupted: bool
    output_bytes: int
    stages: list[dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.rss_growth_pct is not None and self.rss_growth_pct < self.max_growth_pct


def warm_sample_index(samples: list[ProcessSample], warmup_s: float) -> int | None:
    """The first sample taken after ``warmup_s`` and after the first pass had ended."""
    for position, sample in enumerate(samples):
        if sample.elapsed_s >= warmup_s and sample.loops_started >= 2:
            return position
    return None


def late_rss_slope_mib_per_hour(samples: list[ProcessSample]) -> float | None:
    """Least-squares RSS slope over the second half of ``samples``: a step early on does not count."""
    samples = samples[len(samples) // 2:]
    if len(samples) < 3:
        return None
    hours = np.array([s.elapsed_s for s in samples]) / 3600.0
    rss = np.array([s.rss_mib for s in samples])
    return float(np.polyfit(hours, rss, 1)[0])


def build_report(settings: argparse.Namespace, backend: str, samples: list[ProcessSample],
                 after: ProcessSample, summary: dict[str, Any],
                 output: RotatingOutput, interrupted: bool, run_seconds: float) -> SoakReport:
    """Figures from the samples; ``final`` is the last look while the graph still ran at full load."""
    before, final = samples[0], samples[-1]
    # The first look at a graph that has produced output: its threads and files are all open.
    running = next((sample for sample in samples if sample.frames > 0), final)
    warm_at = warm_sample_index(samples[:-1], settings.warmup_s)
    warm = samples[warm_at] if warm_at is not None else None
    after_warmup = samples[warm_at:] if warm_at is not None else []
    growth = 100.0 * (final.rss_kib - warm.rss_kib) / warm.rss_kib if warm is not None else None
    return SoakReport(
        video=str(settings.video), backend=backend, precision=settings.precision or "config",
        det_interval=settings.det_interval, sink=settings.sink, live_fps=settings.live_fps,
        duration_s=round(run_seconds, 1), frames=summary["frames"], passes=final.loops_started,
        fps=round(summary["frames"] / run_seconds, 2) if run_seconds > 0 else 0.0,
        warmup_end_s=warm.elapsed_s if warm is not None else None,
        rss_warm_mib=round(warm.rss_mib, 1) if warm is not None else None,
        rss_final_mib=round(final.rss_mib, 1),
        rss_max_mib=round(max(s.rss_mib for s in samples), 1),
        rss_growth_pct=round(growth, 2) if growth is not None else None,
        rss_late_slope_mib_per_h=(round(slope, 1) if (slope := late_rss_slope_mib_per_hour(after_warmup))
                                  is not None else None),
        max_growth_pct=settings.max_growth,
        threads={"before_start": before.threads, "running": running.threads,
                 "warm": warm.threads if warm else running.threads, "end": final.threads,
                 "after_stop": after.threads},
        open_fds={"before_start": before.open_fds, "running": running.open_fds,
                  "warm": warm.open_fds if warm else running.open_fds, "end": final.open_fds,
                  "after_stop": after.open_fds},
        dropped=summary["dropped"], decode_error=summary["decode_error"], interrupted=interrupted,
        latency_ms={key: round(value, 1) for key, value in summary["latency"].items()},
        queue_max_depth=summary["queue_max_depth"],
        output_bytes=output.bytes_written, stages=summary["stages"],
        samples=[asdict(s) for s in samples],
    )


def print_report(report: SoakReport) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} MiB"

    console = Console(stderr=True)
    table = Table(title=f"soak: {Path(report.video).name} · {report.backend}/{report.precision} · "
                        f"det every {report.det_interval} · sink {report.sink}"
                        + (f" · live at {report.live_fps:g} fps" if report.live_fps else ""))
    table.add_column("figure")
    table.add_column("value", justify="right")
    growth = "n/a (run ended before warm-up)" if report.rss_growth_pct is None else f"{report.rss_growth_pct:+.2f} %"
    verdict = "[green]ok[/]" if report.passed else "[red]over target[/]" if report.rss_growth_pct is not None else ""
    rows = [
        ("duration", f"{report.duration_s:.0f} s"),
        ("frames (passes over the video)", f"{report.frames} ({report.passes})"),
        ("fps", f"{report.fps:.1f}"),
        ("warm-up ended at", "n/a" if report.warmup_end_s is None else f"{report.warmup_end_s:.0f} s"),
        ("RSS after warm-up", mib(report.rss_warm_mib)),
        ("RSS final", mib(report.rss_final_mib)),
        ("RSS max", mib(report.rss_max_mib)),
        (f"RSS growth after warm-up (target < {report.max_growth_pct:g} %)", f"{growth} {verdict}"),
        ("RSS slope, 2nd half after warm-up", "n/a" if report.rss_late_slope_mib_per_h is None
         else f"{report.rss_late_slope_mib_per_h:+.1f} MiB/h"),
        ("open fds: before / running / warm / end / after stop", " / ".join(map(str, report.open_fds.values()))),
        ("OS threads: before / running / warm / end / after stop", " / ".join(map(str, report.threads.values()))),
        ("dropped frames", str(report.dropped)),
        ("latency decode → sinks, recent frames: p50 / p95 / max",
         " / ".join(f"{report.latency_ms[key]:.0f}" for key in ("p50_ms", "p95_ms", "max_ms")) + " ms"),
        ("deepest queue: decoded / to pose / posed", " / ".join(map(str, report.queue_max_depth.values()))),
        ("output written (rotated away included)", f"{report.output_bytes / 1e6:.1f} MB"),
    ]
    if report.decode_error:
        rows.append(("decode error", report.decode_error))
    if report.interrupted:
        rows.append(("interrupted", "yes (Ctrl-C)"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    stages = Table(title="stages")
    for column in ("stage", "items", "fps", "mean ms", "p95 ms"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for stage in report.stages:
        stages.add_row(stage["stage"], str(stage["items"]), f"{stage['fps']:.1f}",
                       f"{stage['mean_ms']:.2f}", f"{stage['p95_ms']:.2f}")
    console.print(stages)


# -- the run --------------------------------------------------------------------------------------
def run_soak(settings: argparse.Namespace) -> SoakReport:
    """Load models, run the graph until the deadline, and measure; raises StreamposeError on bad input."""
    if settings.minutes <= 0:
        raise ConfigError(f"--minutes {settings.minutes:g}: must be positive")
    if settings.sample_s <= 0:
        raise ConfigError(f"--sample-s {settings.sample_s:g}: must be positive")
    if settings.live_fps is not None and settings.live_fps <= 0:
        raise ConfigError(f"--live-fps {settings.live_fps:g}: must be positive")
    source = LoopedVideoSource(settings.video, live_fps=settings.live_fps)
    pipeline = create_pipeline(settings.pipeline, backend=settings.backend, precision=settings.precision)
    folder, temporary = prepare_output_folder(settings.out_dir)
    output = RotatingOutput(settings.sink, folder, source, keep=settings.keep)
    stream_settings = StreamSettings(det_interval=settings.det_interval, det_threshold=pipeline.det_threshold)
    failed = {"value": False}
    graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, stream_settings, [output],
                        finishers=[lambda: output.close(failed=failed["value"] or graph.error is not None)])
    interrupted = False
    with RichProgress(settings.minutes * 60.0) as view:
        sampler = Sampler(graph, source, settings.minutes * 60.0, settings.sample_s, view)
        sampler.start()
        try:
            graph.run()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            failed["value"] = True
            raise
        finally:
            run_seconds = time.perf_counter() - sampler.started
            sampler.stop()
            source.close()
    if not sampler.deadline_reached:
        # Ended early (Ctrl-C or the video failed): the last look is now, not at the deadline.
        sampler.samples.append(take_sample(run_seconds, graph.frames_out, source.loops_started))
    after = take_sample(time.perf_counter() - sampler.started, graph.frames_out, source.loops_started)
    report = build_report(settings, pipeline.backend, sampler.samples, after, graph.summary(),
                          output, interrupted, run_seconds)
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def prepare_output_folder(out_dir: str | None) -> tuple[Path, bool]:
    """The folder for rotated outputs and whether it is a temporary one to remove at the end."""
    if out_dir is None:
        return Path(tempfile.mkdtemp(prefix="streampose-soak-")), True
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out-dir {folder}: cannot create it ({error.strerror})") from None
    return folder, False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video file played in a loop")
    parser.add_argument("--backend", default="auto", help="auto, paddle, onnxruntime or openvino")
    parser.add_argument("--pipeline", default=STREAM_PRESET,
                        help="pipeline name or YAML (default: the stream preset `streampose run` uses)")
    parser.add_argument("--precision", default=None,
                        help="f32 or bf16 for both models (OpenVINO; default: the pipeline's own)")
    parser.add_argument("--det-interval", type=int, default=3, help="run the detector every k-th frame")
    parser.add_argument("--live-fps", type=float, default=None,
                        help="play the video as a live camera at this rate (drops when behind)")
    parser.add_argument("--sink", choices=SINK_KINDS, default="video",
                        help="per-pass output: H.264 video with skeletons, JSON Lines, or nothing")
    parser.add_argument("--out-dir", default=None,
                        help="folder for the rotated outputs (default: a temporary folder, removed at the end)")
    parser.add_argument("--keep", type=int, default=2, help="newest per-pass files kept")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="warm-up: at least this long, and at least one pass over the video")
    parser.add_argument("--max-growth", type=float, default=10.0, help="RSS growth target after warm-up, %%")
    parser.add_argument("--json", default=None, help="write the report (with every sample) to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, write: Callable[[str], object] = sys.stderr.write) -> int:
    settings = parse_args(argv)
    os.environ.setdefault(MODEL_HOME_ENV, str(SHARED / "models"))  # as the tests find them
    try:
        report = run_soak(settings)
    except StreamposeError as error:
        write(f"soak: error: {error}\n")
        return error.exit_code
    print_report(report)
    if settings.json:
        Path(settings.json).write_text(json.dumps(asdict(report), indent=1) + "\n", encoding="utf-8")
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.decode_error:
        return EXIT_ERROR
    if report.rss_growth_pct is None:
        return EXIT_INCONCLUSIVE
    return EXIT_OK if report.passed else EXIT_GROWTH


if __name__ == "__main__":
    sys.exit(main())
