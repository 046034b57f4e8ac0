#!/usr/bin/env python3
"""Cut the first frames of a video into a short H.264 clip (quick demos and bug reports)."""

from __future__ import annotations

import argparse
import sys

import av

from streampose.sinks.video import VideoWriter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args(argv)
    with av.open(args.source) as container:
        stream = container.streams.video[0]
        writer = None
        for index, frame in enumerate(container.decode(stream)):
            if index >= args.frames:
                break
            image = frame.to_ndarray(format="bgr24")
            if writer is None:
                writer = VideoWriter(args.target, stream.average_rate or 25, (image.shape[1], image.shape[0]))
            writer.write(image)
        if writer is None:
            print(f"make_clip: {args.source} has no frames", file=sys.stderr)
            return 1
        writer.close()
    print(f"make_clip: wrote {writer.frames_written} frames to {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
