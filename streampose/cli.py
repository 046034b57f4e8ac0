"""The ``streampose`` command (also ``python run.py``).

Subcommands: ``predict`` (images, PaddleX-compatible), ``run`` (video/webcam/RTSP), ``serve``,
``models``, ``bench``. PaddleX's own spelling works too: ``streampose --pipeline
human_keypoint_detection --input X --save_path out`` and ``streampose --get_pipeline_config NAME``.
User-caused failures print one line on stderr and exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections.abc import Sequence

from streampose.errors import StreamposeError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _threshold(text: str) -> float:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number between 0 and 1")
    return float(value)


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu (default), gpu or gpu:N")
    parser.add_argument("--backend", default=None,
                        help="auto (fastest installed), paddle, onnxruntime or openvino")
    parser.add_argument("--cpu_threads", "--cpu-threads", dest="cpu_threads", type=int, default=0,
                        help="CPU threads per model, per stream where a model runs several (0: backend default)")
    parser.add_argument("--disable_mkldnn", "--no-mkldnn", dest="enable_mkldnn", action="store_false",
                        help="Paddle backend: turn oneDNN (MKLDNN) kernels off")
    parser.add_argument("--precision", default=None, choices=("auto", "f32", "bf16", "int8"),
                        help="OpenVINO inference precision for both models (default: the config's, else f32; "
                             "auto: bf16 where it is measured faster on this CPU, else f32; "
                             "int8 runs the copies `streampose models quantize` makes)")
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)  # PaddleX 3.7 flag
    parser.add_argument("--use_hpip", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hpi_config", default=None, help=argparse.SUPPRESS)


def _add_predict_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+",
                        help="image file(s), directory, or http(s) URL")
    parser.add_argument("--pipeline", default="human_keypoint_detection",
                        help="pipeline name or a PaddleX-schema YAML (default human_keypoint_detection)")
    parser.add_argument("--det_threshold", "--det-threshold", dest="det_threshold", type=_threshold,
                        default=None, help="detector score threshold (default from the config: 0.5)")
    parser.add_argument("--save_path", "--save-path", dest="save_path", default=None,
                        help="directory for <name>_res.json and <name>_res.<ext>")
    parser.add_argument("--quiet", action="store_true", help="do not print each result")
    _add_runtime_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streampose", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    predict = commands.add_parser("predict", help="keypoints on images (PaddleX-compatible output)")
    _add_predict_flags(predict)

    get_config = commands.add_parser("get-config", help="write the packaged pipeline YAML")
    get_config.add_argument("name", nargs="?", default="human_keypoint_detection")
    get_config.add_argument("--save_path", "--save-path", dest="save_path", default=".")

    from streampose.cli_commands import register_commands  # noqa: PLC0415

    register_commands(commands, _add_runtime_flags)
    return parser


def _version() -> str:
    from streampose import __version__  # noqa: PLC0415

    return f"streampose {__version__}"


def _paddlex_style(argv: list[str]) -> argparse.Namespace | None:
    """Parse PaddleX's flat flags (``--pipeline … --input …``, ``--get_pipeline_config``, ``--serve``)."""
    if not argv or not argv[0].startswith("--") or argv[0] in ("--help", "-h", "--version"):
        return None
    parser = argparse.ArgumentParser(prog="streampose")
    parser.add_argument("--get_pipeline_config", default=None)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-batch", dest="max_batch", type=int, default=8)
    parser.add_argument("--log-level", dest="log_level", default="info")
    parser.add_argument("--input", nargs="+", default=None)
    parser.add_argument("--pipeline", default="human_keypoint_detection")
    parser.add_argument("--det_threshold", type=_threshold, default=None)
    parser.add_argument("--save_path", default=None)
    parser.add_argument("--quiet", action="store_true")
    _add_runtime_flags(parser)
    args = parser.parse_args(argv)
    if args.get_pipeline_config:
        args.command = "get-config"
        args.name = args.get_pipeline_config
        args.save_path = args.save_path or "."
    elif args.serve:
        args.command = "serve"
    elif args.input:
        args.command = "predict"
    else:
        parser.error("give --input (predict), --serve or --get_pipeline_config")
    return args


def cmd_predict(args: argparse.Namespace) -> int:
    from streampose.inputs import collect_inputs  # noqa: PLC0415
    from streampose.pipeline import create_pipeline, input_cache_dir  # noqa: PLC0415

    # Check local inputs before the models load, so a typo fails in a blink; URLs are fetched
    # (and checked) by predict itself.
    local = [entry for entry in args.input if not entry.lower().startswith(("http://", "https://"))]
    if local:
        collect_inputs(local, input_cache_dir())

    pipeline = create_pipeline(args.pipeline, device=args.device, backend=args.backend,
                               engine=args.engine, cpu_threads=args.cpu_threads,
                               enable_mkldnn=args.enable_mkldnn, precision=args.precision)
    inputs = args.input if len(args.input) > 1 else args.input[0]
    count = 0
    for result in pipeline.predict(inputs, det_threshold=args.det_threshold):
        if not args.quiet:
            result.print()
        if args.save_path:
            result.save_all(args.save_path)
        count += 1
    print(f"streampose: {count} image(s) processed" + (f", results in {args.save_path}" if args.save_path else ""),
          file=sys.stderr)
    return 0


def cmd_get_config(args: argparse.Namespace) -> int:
    from streampose.config import export_pipeline_config  # noqa: PLC0415

    target = export_pipeline_config(args.name, args.save_path)
    print(f"streampose: pipeline config written to {target}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _paddlex_style(argv) or build_parser().parse_args(argv)
        if not getattr(args, "command", None):
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        handler = {"predict": cmd_predict, "get-config": cmd_get_config}.get(args.command)
        if handler is None:
            from streampose.cli_commands import dispatch  # noqa: PLC0415

            return dispatch(args)
        return handler(args)
    except StreamposeError as exc:
        print(f"streampose: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streampose: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): exit quietly, like other CLI tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
