"""Keep native libraries from writing on the process's stdout.

Paddle's oneDNN passes print diagnostic lines (``ReduceMeanCheckIfOneDNNSupport``) straight to
file descriptor 1, which would corrupt JSON that users pipe from stdout. Python-level redirection
cannot catch C++ writes, so the descriptor itself is pointed at /dev/null for the duration.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    with _lock:
        try:
            sys.stdout.flush()
        except (AttributeError, ValueError):
            pass
        try:
            saved = os.dup(1)
        except OSError:  # no fd 1 (embedded interpreters): nothing to protect
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
