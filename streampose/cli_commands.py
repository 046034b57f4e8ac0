"""Subcommands beyond ``predict``: ``run`` (video, webcam, RTSP) and ``models``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from streampose.config import PRECISIONS, STREAM_PRESET
from streampose.errors import ConfigError, InputError, StreamposeError

DEFAULT_DET_INTERVAL = 3


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def register_commands(commands: argparse._SubParsersAction,
                      add_runtime_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    from streampose.serving.cli import add_live_view_flag, add_serve_command  # noqa: PLC0415

    run = commands.add_parser("run", help="tracked skeletons on a video, folder of videos, webcam or RTSP")
    run.add_argument("--source", required=True,
                     help="video file, folder of videos, webcam index (0) or /dev/videoN, rtsp://..., "
                          "http(s) video URL, image folder/glob, or lavfi:<filter> test source")
    run.add_argument("--output", "-o", default=None,
                     help="annotated video file (a folder when --source is a folder of videos)")
    run.add_argument("--json", default=None, help="JSON Lines file, one line per frame ('-' for stdout)")
    run.add_argument("--show", action="store_true", help="show the annotated video in a window (q/Esc quits)")
    run.add_argument("--det-interval", "--det_interval", dest="det_interval", type=_positive_int,
                     default=DEFAULT_DET_INTERVAL,
                     help=f"run the detector every k-th frame (default {DEFAULT_DET_INTERVAL}); "
                          "tracked boxes are posed in between")
    run.add_argument("--det_threshold", "--det-threshold", dest="det_threshold", type=float, default=None)
    run.add_argument("--smooth", action="store_true", help="One-Euro keypoint smoothing per track")
    run.add_argument("--pipeline", "--config", dest="pipeline", default=STREAM_PRESET,
                     help=f"pipeline name or PaddleX-schema YAML (default {STREAM_PRESET}: the same "
                          "models as human_keypoint_detection, tuned for video)")
    run.add_argument("--fps", type=float, default=None, help="frame rate for image sequences and webcams")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run.add_argument("--no-hud", dest="hud", action="store_false", help="no fps/persons panel on the video")
    run.add_argument("--preset", default=None,
                     choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
                     help="x264 preset of --output (default veryfast with subme=1 and me=dia: ~30%% less CPU than "
                          "plain veryfast for a ~1%% larger file; ultrafast saves more for a ~3x larger file)")
    run.add_argument("--summary-json", default=None, help="write the end summary (stage stats) as JSON")
    add_runtime_flags(run)
    add_live_view_flag(run)
    add_serve_command(commands, add_runtime_flags)

    bench = commands.add_parser("bench", help="speed figures: streaming graph vs naive loop vs PaddleX")
    bench.add_argument("--video", nargs="+", default=None,
                       help="video(s) to run (default: vtest.avi from the shared samples)")
    bench.add_argument("--backend", default=None)
    bench.add_argument("--det-interval", "--det_interval", dest="det_interval", type=_positive_int,
                       default=DEFAULT_DET_INTERVAL)
    bench.add_argument("--pipeline", "--config", dest="pipeline", default=STREAM_PRESET)
    bench.add_argument("--baseline-frames", type=_positive_int, default=120)
    bench.add_argument("--paddlex-frames", type=_positive_int, default=60)
    bench.add_argument("--variant-frames", type=_positive_int, default=300,
                       help="frames in the 720p and 1080p variants made from the first video")
    bench.add_argument("--no-variants", dest="make_variants", action="store_false")
    bench.add_argument("--json", dest="json_path", default=None, help="write the report here (else stdout)")
    bench.add_argument("--reference", default=None,
                       help="PaddleX's per-frame JSON for the first video (default for vtest.avi: "
                            "data/paddlex_reference/vtest.avi.json beside the samples, if there)")

    streams = commands.add_parser(
        "bench-streams", help="how many live streams at once this machine keeps up with (shared models)")
    streams.add_argument("--streams", nargs="+", type=_positive_int, default=[1, 2, 4, 8, 16, 32, 48, 64],
                         help="stream counts to try, ascending; stops after the first that does not keep up")
    streams.add_argument("--video", default=None,
                         help="video each stream plays (default: vtest.avi tiled 2x2 at --size, made once)")
    streams.add_argument("--size", type=_size, default=(1920, 1080), help="size of the default video (WxH)")
    streams.add_argument("--frames", type=_positive_int, default=300, help="frames of the default video")
    streams.add_argument("--fps", type=float, default=30.0,
                         help="camera rate each stream is played at (0: files, as fast as they go)")
    streams.add_argument("--pipeline", "--config", dest="pipeline", default=STREAM_PRESET)
    streams.add_argument("--det-interval", "--det_interval", dest="det_interval", type=_positive_int,
                         default=DEFAULT_DET_INTERVAL)
    streams.add_argument("--codec", default=None,
                         help="also encode each stream's annotated video with this codec (auto: libx264; "
                              "h264_nvenc on an NVIDIA GPU); default: no video, JSON-level analysis only")
    streams.add_argument("--max-drop-rate", type=float, default=0.01, help="share of dropped frames allowed")
    streams.add_argument("--max-p95-ms", type=float, default=150.0, help="decode-to-render p95 allowed")
    streams.add_argument("--processes", type=_positive_int, default=None,
                         help="processes the streams are spread over, each with its own models (default: "
                              "one per four cores, at least one; a process's Python serves a few streams)")
    streams.add_argument("--device", default=None, help="cpu (default), gpu or gpu:N")
    streams.add_argument("--backend", default=None, help="auto (fastest installed), paddle, onnxruntime or openvino")
    streams.add_argument("--json", dest="json_path", default=None, help="write the report here (else stdout)")

    precision = commands.add_parser(
        "bench-precision", help="speed and OKS AP of the pose model in each precision this machine runs")
    precision.add_argument("--precision", dest="precisions", nargs="+", default=None,
                           choices=[name for name in PRECISIONS if name != "auto"],
                           help="precisions to measure (default: f32, bf16 where the CPU has it, int8 "
                                "where `streampose models quantize` made a copy)")
    precision.add_argument("--pose-model", default="PP-TinyPose_128x96",
                           help="keypoint model name or folder (default PP-TinyPose_128x96)")
    precision.add_argument("--data", default=None,
                           help="folder with coco_mini/ and coco_train80/ (and paddlex_reference/); default: "
                                "$STREAMPOSE_DATA, else ../shared/data")
    precision.add_argument("--sets", nargs="+", default=["coco_mini", "coco_train80"],
                           choices=("coco_mini", "coco_train80"),  # evaluation.EVAL_SETS (not imported: numpy)
                           help="evaluation sets to score on")
    precision.add_argument("--json", dest="json_path", default=None, help="write the report here (else stdout)")

    models = commands.add_parser("models", help="model utilities")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    export = models_sub.add_parser("export-onnx", help="convert a Paddle model folder to ONNX")
    export.add_argument("model", help="model name (in the model home) or folder")
    export.add_argument("--output", default=None, help="where to write the .onnx (default: cache)")
    export.add_argument("--opset", type=int, default=13)
    quantize = models_sub.add_parser(
        "quantize", help="make INT8 copies of models (NNCF, calibrated on real frames) for --precision int8")
    quantize.add_argument("--model", action="extend", nargs="+", default=None,
                          help=f"model name(s) or folder(s) (default: the {STREAM_PRESET} detector and pose model)")
    quantize.add_argument("--video", default=None,
                          help="calibration video (default: vtest.avi of the shared samples, with its photos)")
    quantize.add_argument("--images", default=None, help="folder of calibration photos")
    quantize.add_argument("--samples", type=_positive_int, default=300, help="calibration inputs per model")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return cmd_run(args)
    if args.command == "models":
        return _models(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "bench-streams":
        return _bench_streams(args)
    if args.command == "bench-precision":
        return _bench_precision(args)
    if args.command == "serve":
        from streampose.serving.cli import cmd_serve  # noqa: PLC0415

        return cmd_serve(args)
    raise ConfigError(f"unknown command {args.command}")


def cmd_run(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from streampose.graph.api import RunOutputs, check_source_ended_cleanly, print_summary, run_stream  # noqa: PLC0415
    from streampose.graph.runner import StreamSettings  # noqa: PLC0415
    from streampose.pipeline import check_threshold, create_pipeline  # noqa: PLC0415
    from streampose.sources import list_video_files  # noqa: PLC0415

    if not (args.output or args.json or args.show or args.serve):
        print("streampose: note: no --output, --json or --show given; only the summary is printed",
              file=sys.stderr)
    threshold = check_threshold(args.det_threshold)
    source_path = Path(args.source)
    batch = source_path.is_dir() and bool(list_video_files(source_path))
    if batch and args.output and Path(args.output).suffix:
        raise ConfigError(f"--output {args.output}: give a folder when --source is a folder of videos")
    if batch and args.json and args.json != "-" and Path(args.json).suffix:
        raise ConfigError(f"--json {args.json}: give a folder when --source is a folder of videos")
    source = None
    if not batch:
        from streampose.sources import open_source  # noqa: PLC0415

        # Open the source before loading models: a bad path or URL fails at once.
        source = open_source(args.source, **({"fps": args.fps} if args.fps is not None else {}))
    try:
        pipeline = create_pipeline(args.pipeline, device=args.device, backend=args.backend, engine=args.engine,
                                   cpu_threads=args.cpu_threads, enable_mkldnn=args.enable_mkldnn,
                                   precision=args.precision)
    except BaseException:
        if source is not None:
            source.close()
        raise
    settings = StreamSettings(det_interval=args.det_interval, smooth=args.smooth,
                              det_threshold=threshold if threshold is not None else pipeline.det_threshold)
    if not batch:
        from streampose.serving.cli import start_live_view  # noqa: PLC0415

        outputs = RunOutputs(Path(args.output) if args.output else None, args.json, args.show, args.hud,
                             args.preset)
        live = start_live_view(args.serve)
        try:
            summary = run_stream(pipeline, source, settings, outputs, progress=args.progress,
                                 extra_sinks=[live.sink] if live else [])
        finally:
            if live is not None:
                live.stop()
        print_summary(summary)
        _write_summary(args.summary_json, summary, json)
        check_source_ended_cleanly(summary)
        return 130 if summary["interrupted"] else 0
    return _run_folder(args, pipeline, settings, list_video_files(source_path), json, print_summary)


def _run_folder(args, pipeline, settings, videos, json, print_summary) -> int:
    """Batch processing: one output per input video, every failure reported, a table at the end."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from streampose.graph.api import RunOutputs, run_stream  # noqa: PLC0415

    rows, failures = [], 0
    for video in videos:
        output = Path(args.output) / f"{video.stem}_pose.mp4" if args.output else None
        json_path = str(Path(args.json) / f"{video.stem}.jsonl") if args.json and args.json != "-" else args.json
        try:
            summary = run_stream(pipeline, str(video), settings,
                                 RunOutputs(output, json_path, False, args.hud, args.preset),
                                 progress=args.progress)
        except StreamposeError as exc:
            failures += 1
            rows.append((video.name, "-", "-", "-", f"error: {exc}"))
            continue
        status = "ok" if not summary["decode_error"] else f"truncated: {summary['decode_error']}"
        failures += bool(summary["decode_error"])
        rows.append((video.name, str(summary["frames"]), f"{summary['fps']:.1f}", str(summary["tracks"]), status))
        if summary["interrupted"]:
            break
    table = Table(title=f"streampose: {len(videos)} videos")
    for column in ("video", "frames", "fps", "tracks", "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(stderr=True).print(table)
    return 1 if failures else 0


def _bench(args: argparse.Namespace) -> int:
    from streampose.bench import BenchSettings, main  # noqa: PLC0415

    videos = args.video or [str(default_video())]
    reference = args.reference or _default_reference(Path(videos[0]))
    if reference is not None and not Path(reference).is_file():
        raise InputError(f"bench: reference {reference}: no such file")
    return main(BenchSettings(videos=videos, backend=args.backend, det_interval=args.det_interval,
                              baseline_frames=args.baseline_frames, paddlex_frames=args.paddlex_frames,
                              pipeline=args.pipeline, json_path=args.json_path,
                              make_variants=args.make_variants, max_frames=args.variant_frames,
                              reference=None if reference is None else str(reference)))


def _bench_streams(args: argparse.Namespace) -> int:
    from streampose.bench_streams import StreamLimits, StreamsBenchSettings, default_crowd_video, main  # noqa: PLC0415

    if args.fps < 0:
        raise InputError(f"bench-streams: --fps {args.fps:g} must be 0 (files) or a positive rate")
    if args.video is not None and not Path(args.video).is_file():
        raise InputError(f"bench-streams: video {args.video}: no such file")
    video = Path(args.video) if args.video else default_crowd_video(args.size, args.frames)
    return main(StreamsBenchSettings(
        counts=args.streams, video=str(video), fps=args.fps or None, pipeline=args.pipeline,
        backend=args.backend, device=args.device, det_interval=args.det_interval, codec=args.codec,
        limits=StreamLimits(max_drop_rate=args.max_drop_rate, max_p95_ms=args.max_p95_ms),
        processes=args.processes, json_path=args.json_path))


def _bench_precision(args: argparse.Namespace) -> int:
    from streampose.bench_precision import PrecisionBenchSettings, default_data_dir, main  # noqa: PLC0415

    if args.data is not None and not Path(args.data).is_dir():
        raise InputError(f"bench-precision: data {args.data}: no such folder")
    data_dir = Path(args.data) if args.data else default_data_dir()
    return main(PrecisionBenchSettings(data_dir=data_dir, pose_model=args.pose_model,
                                       precisions=list(dict.fromkeys(args.precisions)) if args.precisions else None,
                                       sets=list(dict.fromkeys(args.sets)), json_path=args.json_path))


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1920x1080") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be at least 16")
    return width, height


def _default_reference(video: Path) -> Path | None:
    """PaddleX's per-frame output for a shared sample video, where the shared data has it."""
    candidate = video.resolve().parent.parent / "data" / "paddlex_reference" / f"{video.name}.json"
    return candidate if candidate.is_file() else None


def default_video() -> Path:
    import os  # noqa: PLC0415

    candidates = [Path(os.environ.get("STREAMPOSE_SAMPLES", "")) / "vtest.avi",
                  Path.cwd().parent / "shared" / "samples" / "vtest.avi",
                  Path(__file__).resolve().parents[2] / "shared" / "samples" / "vtest.avi"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError("bench: no --video given and vtest.avi not found (set STREAMPOSE_SAMPLES)")


def _write_summary(path: str | None, summary: dict, json) -> None:
    if path:
        Path(path).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")


def _models(args: argparse.Namespace) -> int:
    if args.models_command == "quantize":
        return _quantize(args)
    from streampose.runtime.onnx_export import export_onnx  # noqa: PLC0415
    from streampose.models.registry import load_model_files  # noqa: PLC0415

    folder = Path(args.model)
    files = load_model_files(None, folder) if folder.is_dir() else load_model_files(args.model, None)
    output = export_onnx(files, Path(args.output) if args.output else None, opset=args.opset)
    print(f"streampose: ONNX model written to {output}", file=sys.stderr)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from streampose.models.quantize import calibration_images, quantize_named_models  # noqa: PLC0415

    video = Path(args.video) if args.video else None
    images = Path(args.images) if args.images else None
    if video is None and images is None:
        try:
            video = default_video()
        except InputError:
            raise InputError("models quantize: no --video or --images given and vtest.avi not found "
                             "(set STREAMPOSE_SAMPLES)") from None
        images = video.parent
    quantize_named_models(args.model, calibration_images(video, images), limit=args.samples)
    return 0


__all__ = ["InputError", "dispatch", "register_commands"]
