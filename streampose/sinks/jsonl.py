"""JSON Lines results: one compact JSON object per frame, to a file or to stdout.

The caller builds each frame's dict (``{"source", "frame", "time", "persons": [...]}``); this
module only serialises it. NumPy scalars and arrays are converted on the way, so callers can
pass model outputs as they are. A file is written atomically like the video sink
(``out.partial.jsonl`` renamed on :meth:`JsonLinesWriter.close`); ``-`` streams to stdout and
flushes every line so a downstream ``| jq`` sees frames as they happen.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Mapping, TextIO

import numpy as np

from ..errors import InputError
from .base import AtomicOutput
from .video import partial_path_for

STDOUT = "-"


def to_json_value(value: Any) -> Any:
    """``json.dumps`` fallback for NumPy values (called only for types json cannot handle)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=to_json_value)


class JsonLinesWriter(AtomicOutput):
    """Append one JSON object per frame; same close/abort contract as the video writer."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._finished = False
        self.lines_written = 0
        self.to_stdout = os.fspath(target) == STDOUT
        self.path: Path | None = None if self.to_stdout else Path(target)
        self.partial_path: Path | None = None
        self._stream: TextIO
        if self.path is None:
            self._stream = sys.stdout
            return
        self.partial_path = partial_path_for(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(self.partial_path, "w", encoding="utf-8", newline="\n")
        except OSError as error:
            raise InputError(f"cannot write JSON lines {self.path}: {error.strerror or error}") from None

    def write(self, record: Mapping[str, Any]) -> None:
        line = dumps_line(record)
        with self._lock:
            if self._finished:
                raise InputError(f"cannot write JSON lines {self._name}: the writer is already closed")
            try:
                self._stream.write(line + "\n")
                if self.to_stdout:
                    self._stream.flush()
            except OSError as error:
                self._abort_locked()
                raise InputError(f"cannot write JSON lines {self._name}: {error.strerror or error}") from None
            self.lines_written += 1

    def close(self) -> None:
        """Finish the file and give it its final name (stdout is flushed, never closed)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            try:
                self._stream.flush()
                if self.path is not None and self.partial_path is not None:
                    self._stream.close()
                    os.replace(self.partial_path, self.path)
            except OSError as error:
                self._discard_partial()
                raise InputError(f"cannot write JSON lines {self._name}: {error.strerror or error}") from None


    def _abort_locked(self) -> None:
        if not self._finished:
            self._finished = True
            if self.path is not None:
                self._stream.close()
        self._discard_partial()

    def _discard_partial(self) -> None:
        if self.partial_path is not None:
            try:
                self.partial_path.unlink()
            except OSError:  # already gone, or its folder never existed
                pass

    @property
    def _name(self) -> str:
        return "stdout" if self.path is None else str(self.path)

