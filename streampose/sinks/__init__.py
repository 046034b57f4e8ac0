"""Where results go: encoded video files, JSON Lines, a preview window.

File sinks share one contract: they write under a ``.partial`` name and take the final name
only on a successful ``close()``; ``abort()`` removes the partial file. A run that fails
never leaves an output that looks complete.
"""

from __future__ import annotations

from .jsonl import JsonLinesWriter, dumps_line
from .screen import ScreenWindow, missing_display_reason
from .video import VideoWriter, codec_available, partial_path_for, resolve_codec

__all__ = [
    "JsonLinesWriter",
    "ScreenWindow",
    "VideoWriter",
    "codec_available",
    "dumps_line",
    "missing_display_reason",
    "partial_path_for",
    "resolve_codec",
]
