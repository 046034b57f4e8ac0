"""CLI wiring: the ``serve`` command and the ``--serve [HOST]:PORT`` live view of ``run``.

Kept here so the CLI modules only register and dispatch; everything the service needs to start
(pipeline, settings, server) is assembled in this file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from streampose.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"  # loopback unless asked: PaddleX binds 0.0.0.0, use --host 0.0.0.0 for that
DEFAULT_PORT = 8080


def _megabytes(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return int(value * 1024 * 1024)


def add_serve_command(commands: argparse._SubParsersAction,
                      add_runtime_flags: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``streampose serve`` on the CLI's subparsers."""
    serve = commands.add_parser("serve", help="PaddleX-compatible HTTP API (POST /human-keypoint-detection)")
    serve.add_argument("--pipeline", default="human_keypoint_detection",
                       help="pipeline name or a PaddleX-schema YAML (its Serving.visualize is the default)")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--max-body-mb", dest="max_body_bytes", type=_megabytes, default=None,
                       help="largest request body in MiB (default 32)")
    serve.add_argument("--max-batch", dest="max_batch", type=int, default=8,
                       help="most concurrent requests batched into one model call (default 8)")
    serve.add_argument("--log-level", dest="log_level", default="info",
                       choices=("critical", "error", "warning", "info", "debug"))
    add_runtime_flags(serve)
    return serve


def serving_settings(args: argparse.Namespace):
    from streampose.serving.app import ServingSettings  # noqa: PLC0415

    fields = {"max_batch": getattr(args, "max_batch", 8)}
    if fields["max_batch"] < 1:
        raise ConfigError(f"--max-batch {fields['max_batch']}: must be at least 1")
    if getattr(args, "max_body_bytes", None):
        fields["max_body_bytes"] = args.max_body_bytes
    return ServingSettings(**fields)


def build_serving_app(args: argparse.Namespace):
    """The pipeline and the app for ``args``; models load here, so errors show before listening."""
    from streampose.pipeline import create_pipeline  # noqa: PLC0415
    from streampose.serving.app import create_app  # noqa: PLC0415

    pipeline = create_pipeline(args.pipeline, device=getattr(args, "device", None),
                               backend=getattr(args, "backend", None), engine=getattr(args, "engine", None),
                               cpu_threads=getattr(args, "cpu_threads", 0),
                               enable_mkldnn=getattr(args, "enable_mkldnn", True),
                               precision=getattr(args, "precision", "f32"))
    return create_app(pipeline, serving_settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    """``streampose serve`` (and PaddleX's ``--serve``): run until Ctrl-C."""
    from streampose.serving.server import bind_socket, serve_forever, url_for  # noqa: PLC0415

    host = getattr(args, "host", DEFAULT_HOST) or DEFAULT_HOST
    port = getattr(args, "port", DEFAULT_PORT)
    bind_socket(host, port).close()  # a busy port fails now, before minutes of model loading
    app = build_serving_app(args)
    print(f"streampose: serving {args.pipeline} on {url_for(host, port)} "
          f"(POST /human-keypoint-detection, docs at /docs)", file=sys.stderr)
    serve_forever(app, host, port, log_level=getattr(args, "log_level", "info"))
    print("streampose: server stopped", file=sys.stderr)
    return 0


# -- live view for ``streampose run`` -----------------------------------------------------------
def add_live_view_flag(parser: argparse.ArgumentParser) -> None:
    """``--serve [HOST]:PORT`` on ``run``: ``:8080`` listens on every interface, as in Go and Docker."""
    parser.add_argument("--serve", default=None, metavar="[HOST]:PORT",
                        help="live view in a browser: MJPEG /stream, events /events, page / "
                             "(e.g. :8080, or 127.0.0.1:8080 for this machine only)")


def start_live_view(address: str | None):
    """Start a :class:`~streampose.serving.live.LiveView` for ``--serve``; None when not asked for."""
    if not address:
        return None
    from streampose.serving.live import LiveView  # noqa: PLC0415
    from streampose.serving.server import parse_listen_address  # noqa: PLC0415

    host, port = parse_listen_address(address, DEFAULT_HOST)
    live = LiveView(host, port).start()
    print(f"streampose: live view at {live.url}", file=sys.stderr)
    return live


def attach_live_view(sinks: list, address: str | None):
    """Start the live view and append its sink to ``sinks`` (after the drawing sink); returns it."""
    live = start_live_view(address)
    if live is not None:
        sinks.append(live.sink)
    return live
