"""``streampose bench-streams``: how many cameras at once one machine keeps up with.

A camera server is sized by how many live streams it can take, not by the frames/s of one file.
Each stream here is a graph of its own (decode, track, pose workers, sink), as ``streampose run``
builds it, fed by a video file played at the camera's rate and marked live, so the graph applies
its live policy (the oldest decoded frame is dropped when it falls behind). The streams are
spread over worker processes, and those of one process share its pipeline: the models are loaded
once per process and their sessions take concurrent calls, as a server would run them. Start
times are spread over one frame period, as unsynchronised cameras are.

A stream keeps up when it dropped at most ``max_drop_rate`` of its frames, its decode-to-render
p95 stayed under ``max_p95_ms``, and its source ran at (nearly) the camera's rate: a source that
cannot even decode in real time does not drop, it falls behind. Counts are tried in ascending
order and the search stops after the first count some stream could not keep up with.

Without a rate (``fps=None``) the streams are files processed as fast as they go, every frame:
the throughput of a folder of videos run side by side.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streampose import errors
from streampose.bench import (PacedFileSource, cpu_seconds, make_variant, model_precisions, peak_rss_mb,
                              write_report)

StreamposeError = errors.StreamposeError
# Errors whose text already names the input and the cause (raised again without their class name).
_OUR_ERRORS = frozenset(name for name in dir(errors) if name.endswith("Error"))

# A paced source that delivers (frames + drops) at less than this share of its rate fell behind.
MIN_SOURCE_RATE_SHARE = 0.95


@dataclass
class StreamLimits:
    """What "keeps up" means for one live stream."""

    max_drop_rate: float = 0.01
    max_p95_ms: float = 150.0  # the live latency target of the performance issue


@dataclass
class StreamsBenchSettings:
    counts: list[int]
    video: str
    fps: float | None = 30.0
    pipeline: str = "human_keypoint_detection_stream"
    backend: str | None = None
    device: str | None = None
    det_interval: int = 3
    codec: str | None = None  # None: no video output (JSON-only analysis); "auto", "h264_nvenc", ...
    limits: StreamLimits = field(default_factory=StreamLimits)
    processes: int | None = None  # None: default_processes()
    json_path: str | None = None


def judge_stream(summary: dict, fps: float | None, limits: StreamLimits) -> list[str]:
    """Why one stream did not keep up (empty when it did); a file run (no rate) always does."""
    if fps is None:
        return []
    reasons = []
    offered = summary["frames"] + summary["dropped"]
    drop_rate = summary["dropped"] / max(offered, 1)
    if drop_rate > limits.max_drop_rate:
        reasons.append(f"drops {100 * drop_rate:.1f}% > {100 * limits.max_drop_rate:g}%")
    p95 = summary["latency"]["p95_ms"]
    if p95 > limits.max_p95_ms:
        reasons.append(f"p95 {p95:.0f} ms > {limits.max_p95_ms:g} ms")
    source_rate = summary.get("source_fps") or offered / max(summary["seconds"], 1e-9)
    if source_rate < MIN_SOURCE_RATE_SHARE * fps:
        reasons.append(f"source at {source_rate:.1f} of {fps:g} fps (decode fell behind)")
    return reasons


def run_streams(pipeline: Any, video: str, count: int, fps: float | None, det_interval: int,
                limits: StreamLimits, work: Path, codec: str | None = None,
                on_frame: Callable[[int, Any], None] | None = None,
                first_slot: int = 0, total_streams: int | None = None) -> dict:
    """``count`` streams of ``video`` at once through one pipeline; per-stream and total figures.

    ``on_frame(stream, output)`` sees every posed frame of every stream (tests compare streams).
    ``first_slot`` and ``total_streams`` place these streams among those of other processes, so
    the start times of all of them spread over one frame period.
    """
    from streampose.graph.api import RunOutputs, run_stream  # noqa: PLC0415
    from streampose.graph.runner import StreamSettings  # noqa: PLC0415

    settings = StreamSettings(det_interval=det_interval, det_threshold=pipeline.det_threshold)
    summaries: list[dict | None] = [None] * count
    failures: list[BaseException] = []
    stagger = (1.0 / fps / (total_streams or count)) if fps else 0.0

    def one(slot: int) -> None:
        try:
            time.sleep((first_slot + slot) * stagger)
            source = PacedFileSource(video, fps) if fps else video
            output = work / f"stream{first_slot + slot}.mp4" if codec else None
            rate = _SourceRate()
            extra = [rate.record] + ([lambda out, s=slot: on_frame(s, out)] if on_frame is not None else [])
            summary = run_stream(pipeline, source, settings,
                                 RunOutputs(output, None, False, False, codec=codec or "auto"),
                                 progress=False, extra_sinks=extra, extra_sinks_see_drawing=False)
            summaries[slot] = {**summary, "source_fps": rate.fps, "posed_fps": rate.posed_fps}
        except BaseException as error:  # noqa: BLE001 - re-raised on the calling thread
            failures.append(error)

    cpu_before, started = cpu_seconds(), time.perf_counter()
    threads = [threading.Thread(target=one, args=(slot,), name=f"streampose-bench-stream-{slot}")
               for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise failures[0]
    streams = []
    for summary in summaries:
        assert summary is not None
        reasons = judge_stream(summary, fps, limits)
        streams.append({"frames": summary["frames"], "dropped": summary["dropped"],
                        "seconds": summary["seconds"], "fps": summary["fps"], "source_fps": summary["source_fps"],
                        "posed_fps": summary["posed_fps"],
                        "persons_per_frame": summary["persons"] / max(summary["frames"], 1),
                        "latency": summary["latency"], "queue_max_depth": summary["queue_max_depth"],
                        "kept_up": not reasons, "why_not": reasons})
    return merge_runs([{"streams": count, "source_fps": fps, "seconds": seconds,
                        "cpu_seconds": cpu_seconds() - cpu_before, "per_stream": streams}])


class _SourceRate:
    """The rate a stream's frames left its decoder, from the first posed frame to the last.

    Frame indices count every decoded frame, dropped ones too, so the rate is the source's, not
    the graph's; and timing between frames leaves out the start and end of the run (model
    sessions, thread start-up), which would make a short clip look slower than its camera.
    """

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None
        self.last: tuple[int, float] | None = None
        self.posed = 0

    def record(self, output: Any) -> None:
        point = (output.frame.index, output.decoded_at)
        if self.first is None:
            self.first = point
        self.last = point
        self.posed += 1

    def _span(self) -> float | None:
        if self.first is None or self.last is None or self.last[1] <= self.first[1]:
            return None
        return self.last[1] - self.first[1]

    @property
    def fps(self) -> float | None:
        """Frames decoded per second, dropped ones included."""
        span = self._span()
        return None if span is None else (self.last[0] - self.first[0]) / span

    @property
    def posed_fps(self) -> float | None:
        """Frames posed per second over the same span: below ``fps`` by the drops."""
        span = self._span()
        return None if span is None else (self.posed - 1) / span


def merge_runs(parts: list[dict]) -> dict:
    """One count's figures from the streams of one or more processes that ran side by side."""
    streams = [stream for part in parts for stream in part["per_stream"]]
    seconds = max(part["seconds"] for part in parts)
    cpu = sum(part["cpu_seconds"] for part in parts)
    return {
        "streams": len(streams), "source_fps": parts[0]["source_fps"], "processes": len(parts),
        "seconds": seconds, "cpu_seconds": cpu,
        "total_fps": sum(stream["frames"] for stream in streams) / max(seconds, 1e-9),
        "min_stream_fps": min(stream["fps"] for stream in streams),
        # Between each stream's first and last frame (start-up left out); None for 1-frame runs.
        "min_posed_fps": min((stream["posed_fps"] for stream in streams if stream.get("posed_fps")),
                             default=None),
        "worst_drop_rate": max(stream["dropped"] / max(stream["frames"] + stream["dropped"], 1)
                               for stream in streams),
        "worst_p95_ms": max(stream["latency"]["p95_ms"] for stream in streams),
        "cpu_percent": 100.0 * cpu / max(seconds, 1e-9),
        "kept_up": all(stream["kept_up"] for stream in streams),
        "per_stream": streams,
    }


def warm_up(pipeline: Any, video: str, det_interval: int, limits: StreamLimits, work: Path) -> None:
    """One untimed file run: the first count must not pay for compiling the batch sizes."""
    from streampose.graph.runner import StreamSettings, pose_workers_for, prepare_for_live  # noqa: PLC0415

    prepare_for_live(pipeline.detector, pipeline.keypoint_model,
                     pose_workers_for(StreamSettings(), pipeline.keypoint_model))
    run_streams(pipeline, video, 1, None, det_interval, limits, work)


def split_streams(count: int, processes: int) -> list[int]:
    """``count`` streams over at most ``processes`` processes, as evenly as possible."""
    used = max(1, min(count, processes))
    return [count // used + (1 if rank < count % used else 0) for rank in range(used)]


def _worker(connection, settings: StreamsBenchSettings) -> None:
    """One process of the bench: its own pipeline, warmed up, then runs what the parent asks."""
    from streampose.pipeline import create_pipeline  # noqa: PLC0415

    try:
        pipeline = create_pipeline(settings.pipeline, device=settings.device, backend=settings.backend)
        with tempfile.TemporaryDirectory(prefix="streampose-bench-streams-") as folder:
            work = Path(folder)
            warm_up(pipeline, settings.video, settings.det_interval, settings.limits, work)
            connection.send(("ready", {"backend": pipeline.backend, "precision": model_precisions(pipeline)}))
            while (order := connection.recv()) is not None:
                count, first_slot, total = order
                run = run_streams(pipeline, settings.video, count, settings.fps, settings.det_interval,
                                  settings.limits, work, settings.codec, first_slot=first_slot,
                                  total_streams=total)
                connection.send(("run", {**run, "peak_rss_mb": peak_rss_mb()}))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send(("error", (type(error).__name__, str(error))))
    finally:
        connection.close()


class _Workers:
    """The bench's processes: started (and warmed up) once, reused for every stream count.

    Python runs one thread at a time per process, and each stream's graph needs a few
    milliseconds of Python per frame, so one process tops out well below dozens of 30 fps
    streams; a GPU server runs several. Spawned, not forked: the parent may hold threads.
    """

    def __init__(self, settings: StreamsBenchSettings, processes: int) -> None:
        import multiprocessing  # noqa: PLC0415

        context = multiprocessing.get_context("spawn")
        self.connections, self.processes = [], []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, settings), daemon=True,
                                      name="streampose-bench-streams-worker")
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)
        self.info = [self._receive(rank, "ready") for rank in range(processes)][0]

    def _receive(self, rank: int, expected: str) -> dict:
        """The next message of worker ``rank``; its failure, or its death, raised here in one line."""
        try:
            kind, payload = self.connections[rank].recv()
        except EOFError:
            self.processes[rank].join(5.0)
            raise StreamposeError(f"bench-streams: worker process {rank} died "
                                  f"(exit code {self.processes[rank].exitcode})") from None
        if kind == "error":
            name, message = payload
            raise StreamposeError(f"bench-streams: {message}" if name in _OUR_ERRORS
                                  else f"bench-streams: worker process {rank}: {name}: {message}")
        if kind != expected:
            raise StreamposeError(f"bench-streams: worker {rank} sent {kind!r}, expected {expected!r}")
        return payload

    def run(self, count: int) -> dict:
        shares = split_streams(count, len(self.connections))
        first = 0
        for rank, share in enumerate(shares):  # all orders go out before any result is awaited
            self.connections[rank].send((share, first, count))
            first += share
        parts = [self._receive(rank, "run") for rank in range(len(shares))]
        merged = merge_runs(parts)
        merged["peak_rss_mb"] = sum(part["peak_rss_mb"] for part in parts)
        return merged

    def close(self) -> None:
        for connection in self.connections:
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(10.0)
            if process.is_alive():
                process.terminate()


def default_processes(counts: list[int]) -> int:
    """About one process per four cores (decode, Python and encode of its streams), at least one."""
    return max(1, min(max(counts), (os.cpu_count() or 1) // 4))


def run_bench_streams(settings: StreamsBenchSettings) -> dict:
    counts = sorted(set(settings.counts))
    if not counts or counts[0] < 1:
        raise errors.ConfigError(f"bench-streams: stream counts must be at least 1, got {settings.counts}")
    processes = settings.processes or default_processes(counts)
    workers = _Workers(settings, processes)
    try:
        report: dict[str, Any] = {
            "video": settings.video, "source_fps": settings.fps, "backend": workers.info["backend"],
            "device": settings.device or "cpu", "precision": workers.info["precision"],
            "det_interval": settings.det_interval, "codec": settings.codec, "cpu_count": os.cpu_count(),
            "processes": processes,
            "limits": {"max_drop_rate": settings.limits.max_drop_rate, "max_p95_ms": settings.limits.max_p95_ms},
            "runs": [],
        }
        for count in counts:
            run = workers.run(count)
            report["runs"].append(run)
            if not run["kept_up"]:
                break
    finally:
        workers.close()
    kept_up = [run["streams"] for run in report["runs"] if run["kept_up"]]
    report["max_streams_kept_up"] = max(kept_up, default=0)
    report["peak_rss_mb"] = max(run["peak_rss_mb"] for run in report["runs"])
    return report


def default_crowd_video(size: tuple[int, int], frames: int) -> Path:
    """vtest.avi tiled 2x2 and scaled to ``size`` (a crowd), made once into the user cache."""
    from streampose.cli_commands import default_video as vtest  # noqa: PLC0415
    from streampose.pipeline import input_cache_dir  # noqa: PLC0415

    folder = input_cache_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"vtest_crowd_{size[0]}x{size[1]}_{frames}.mp4"
    return make_variant(vtest(), target, size, True, frames)


def print_report(report: dict) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    rate = f"{report['source_fps']:g} fps" if report["source_fps"] else "as fast as they go"
    table = Table(title=f"streampose bench-streams · {Path(report['video']).name} at {rate} · backend "
                        f"{report['backend']} on {report['device']} · detector {report['precision']['detector']}, "
                        f"pose {report['precision']['pose']} · output {report['codec'] or 'none (JSON only)'}")
    for column in ("streams", "total fps", "slowest stream, posed fps", "worst drops %", "worst p95 ms",
                   "CPU %", "kept up"):
        table.add_column(column, justify="right")
    for run in report["runs"]:
        kinds = sorted({reason.split()[0] for stream in run["per_stream"] for reason in stream["why_not"]})
        behind = sum(not stream["kept_up"] for stream in run["per_stream"])
        verdict = ("-" if not report["source_fps"] else "yes" if run["kept_up"]
                   else f"no: {behind} of {run['streams']} ({', '.join(kinds)})")
        posed = run.get("min_posed_fps")
        table.add_row(str(run["streams"]), f"{run['total_fps']:.1f}",
                      f"{run['min_stream_fps'] if posed is None else posed:.1f}",
                      f"{100 * run['worst_drop_rate']:.1f}", f"{run['worst_p95_ms']:.0f}",
                      f"{run['cpu_percent']:.0f}", verdict)
    console = Console(stderr=True, width=max(Console(stderr=True).width, 150))
    console.print(table)
    verdict = (f"kept up with {report['max_streams_kept_up']} stream(s) at once" if report["source_fps"]
               else "files: every frame processed, no rate to keep up with")
    console.print(f"{verdict} · {report['processes']} process(es) · peak RSS of all "
                  f"{report['peak_rss_mb']:.0f} MB")


def main(settings: StreamsBenchSettings) -> int:
    report = run_bench_streams(settings)
    print_report(report)
    write_report(report, settings.json_path)
    return 0
