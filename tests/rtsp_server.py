#!/usr/bin/python3
"""A real RTSP server for the tests: GStreamer's RTSP server streaming a video file as H.264.

Run it with the *system* interpreter, which has PyGObject (a venv cannot import ``gi``):

    /usr/bin/python3 tests/rtsp_server.py PORT VIDEO [--host 127.0.0.1] [--mount /live]

Debian packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
gstreamer1.0-plugins-bad gstreamer1.0-libav.

The file is decoded and re-encoded (x264, zero-latency) so that any input works and the stream
looks like a camera's: paced in real time, key frame every second. It does not loop: at the end
of the file the server ends the session, which a live client treats like any other disconnect
and reconnects, starting the file again. The media is shared, so several clients see one
encoder. It prints ``READY rtsp://HOST:PORT/MOUNT`` on stdout once it accepts connections, and
stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(video: Path, fps: int) -> str:
    """GStreamer pipeline of one RTSP media; ``pay0`` is the name the server looks for."""
    location = str(video).replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! decodebin ! videoconvert ! video/x-raw,format=I420 '
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("video", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mount", default="/live")
    parser.add_argument("--keyframe-interval", type=int, default=10, help="frames between key frames")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.video.is_file():
        print(f"rtsp_server: no such video file: {args.video}", file=sys.stderr)
        return 2
    Gst.init(None)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.video.resolve(), args.keyframe_interval))
    factory.set_shared(True)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY rtsp://{args.host}:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
