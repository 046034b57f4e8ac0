"""A live preview window (OpenCV HighGUI).

The display is checked when the window is created, not at the first frame: on a headless box
``--show`` must fail before minutes of model loading and decoding, with a line that says what
to do instead.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from ..errors import DeviceError

QUIT_KEYS = frozenset({ord("q"), ord("Q"), 27})  # q, Q, Esc
_HINT = "write a file with --output out.mp4 instead"


def missing_display_reason() -> str | None:
    """Why no window can be opened here, or None when a display seems available.

    Only Linux and the BSDs need a display server variable; macOS and Windows always have a
    desktop when a user runs the program there.
    """
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return None
    display = os.environ.get("DISPLAY", "")
    if os.environ.get("WAYLAND_DISPLAY"):
        return None
    if not display:
        return "DISPLAY is not set"
    # A local X display without its socket makes OpenCV's Qt backend abort the whole process,
    # which no except clause can catch: check for the socket first.
    local = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if local and not Path(f"/tmp/.X11-unix/X{local.group(1)}").exists():
        return f"DISPLAY={display} but no X server listens there"
    return None


class ScreenWindow:
    """Show frames in a window; :meth:`show` returns False once the user wants to stop."""

    def __init__(self, title: str = "streampose") -> None:
        self.title = title
        reason = missing_display_reason()
        if reason is None:
            try:
                cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            except cv2.error as error:
                reason = _meaningful_line(str(error)) or "OpenCV cannot open a window"
        if reason is not None:
            raise DeviceError(f"--show needs a display (none found: {reason}); {_HINT}")
        self._open = True

    def show(self, image: np.ndarray) -> bool:
        """Draw ``image``; False when q/Esc was pressed or the window was closed."""
        if not self._open:
            return False
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return False
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            return False
        return visible >= 1

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # lets HighGUI process the destroy event
            except cv2.error:
                pass

    def __enter__(self) -> ScreenWindow:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _meaningful_line(text: str) -> str:
    """OpenCV errors put the file and line first and the explanation last."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
